"""The training loss: Dice + cross-entropy (the paper's and nnU-Net's), where voxels labelled
K or above (nnU-Net v2's ignore label) count in neither term, as in nnU-Net; and the
adversarial objectives built on it (a clean/adversarial mix, TRADES)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from torch import nn


class DiceCE(nn.Module):
    """MONAI's `DiceCELoss(include_background=False, softmax=True, batch=True)` with a voxel
    mask: bit for bit the same where no voxel is ignored (a test compares them).

    Takes logits `[B, K, ...]` and labels `[B, 1, ...]` (values 0..K-1, or >= K where ignored);
    returns the scalar loss."""

    def __init__(self):
        super().__init__()
        self.dice = MaskedDiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        scored = y < k
        # ignored voxels: class 0 for the one-hot (masked out of Dice), K for CE's ignore_index
        dice = self.dice(logits, torch.where(scored, y, 0), scored)
        # CE's mean over the scored voxels, written as sum / count so that a patch with none
        # scored (sparse annotations) gives 0, not CE's 0 / 0
        ce = F.cross_entropy(logits, y[:, 0].long().clamp(max=k), ignore_index=k, reduction="sum")
        return dice + ce / scored.sum().clamp(min=1)


def consistency(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """TRADES's term for segmentation: KL(p_clean || p_adv) per voxel, mean over the scored
    voxels. logits `[B, K, ...]` each, y `[B, 1, ...]`; returns a scalar."""
    log_clean, log_adv = logits_clean.log_softmax(1), logits_adv.log_softmax(1)
    kl = (log_clean.exp() * (log_clean - log_adv)).sum(1, keepdim=True)
    scored = (y < logits_clean.shape[1]).to(kl.dtype)
    return (kl * scored).sum() / scored.sum().clamp(min=1)


def adversarial_loss(loss_fn: nn.Module, logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor,
                     clean_weight: float = 0.0, trades: float = 0.0) -> torch.Tensor:
    """The objective of an adversarial run with a clean forward pass: with `trades` > 0,
    L(clean) + trades * `consistency` (TRADES, Zhang et al. 2019); else the mix
    clean_weight * L(clean) + (1 - clean_weight) * L(adversarial). logits `[B, K, ...]` each,
    y `[B, 1, ...]`; returns a scalar."""
    if trades > 0:
        return loss_fn(logits_clean, y) + trades * consistency(logits_clean, logits_adv, y)
    return clean_weight * loss_fn(logits_clean, y) + (1 - clean_weight) * loss_fn(logits_adv, y)

"""The training loss: Dice + cross-entropy (the paper's and nnU-Net's), where voxels labelled
K or above (nnU-Net v2's ignore label) count in neither term, as in nnU-Net."""
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

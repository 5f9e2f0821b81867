"""Small *trained* models for the attack tests, trained in seconds on data made here.

A self-labelled random net hides attack defects (a FAB-T that finds nothing passed on one), so
the tests that pin an attack's strength use these: a 3D segmenter of bright spheres in noise,
and a 3D classifier whose logits are broadcast to every voxel (the reduction on which rog's
attacks must agree with AutoAttack's as implemented by torchattacks).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F
from monai.losses import DiceCELoss


def sphere_volumes(n: int, size: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` volumes `[n, 1, S, S, S]` in [0, 1] with labels `[n, S, S, S]`: one sphere per
    foreground class (class k brighter than k - 1) over a noisy background."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    x = 0.3 + 0.1 * torch.randn(n, 1, size, size, size, generator=g)
    y = torch.zeros(n, size, size, size, dtype=torch.long)
    for i in range(n):
        for k in range(1, classes):
            centre = (torch.rand(3, generator=g) * (size - 8) + 4).view(3, 1, 1, 1)
            radius = 2.5 + 2.0 * float(torch.rand(1, generator=g))
            inside = ((grid - centre) ** 2).sum(0) <= radius ** 2
            y[i][inside] = k
            x[i, 0][inside] += 0.25 * k
    return x.clamp(0, 1), y


class Segmenter(nn.Module):
    """A small fully convolutional 3D segmenter (receptive field 11 voxels)."""

    def __init__(self, classes: int, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(1, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv3d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
                                 nn.Conv3d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
                                 nn.Conv3d(width, classes, 1))

    def forward(self, x):
        return self.net(x)


def train_segmenter(classes: int, seed: int = 0, steps: int = 250, size: int = 16) -> nn.Module:
    """A `Segmenter` trained with Dice + CE for `steps` Adam steps on `sphere_volumes`."""
    torch.manual_seed(seed)
    model = Segmenter(classes)
    x, y = sphere_volumes(64, size, classes, seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    y = y[:, None]
    for step in range(steps):
        idx = torch.arange(step * 8, step * 8 + 8) % len(x)
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def blob_images(n: int, classes: int, shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` two-channel volumes `[n, 2, *shape]` in [0, 1] and their classes `[n]`: class k is a
    faint blob at the k-th of several places (its channel-1 copy dimmer) in noise."""
    g = torch.Generator().manual_seed(seed)
    d, h, w = shape
    grid = torch.stack(torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")).float()
    places = [((d - 1) / 2, h * (0.25 + 0.5 * (k % 2)), w * (0.25 + 0.5 * (k // 2 % 2))) for k in range(classes)]
    labels = torch.randint(0, classes, (n,), generator=g)
    x = 0.4 + 0.1 * torch.randn(n, 2, d, h, w, generator=g)
    for i, k in enumerate(labels.tolist()):
        c = torch.tensor(places[k]).view(3, 1, 1, 1) + torch.randn(3, 1, 1, 1, generator=g) * 0.5
        blob = torch.exp(-((grid - c) ** 2).sum(0) / 4.0)
        x[i, 0] += 0.5 * blob
        x[i, 1] += 0.25 * blob
    return x.clamp(0, 1), labels


class Classifier(nn.Module):
    """A small 3D CNN classifier: `[B, 2, D, H, W]` -> logits `[B, K]`."""

    def __init__(self, classes: int, kernel=3):
        super().__init__()
        pad = tuple(k // 2 for k in kernel) if isinstance(kernel, tuple) else kernel // 2
        self.features = nn.Sequential(nn.Conv3d(2, 16, kernel, padding=pad), nn.ReLU(),
                                      nn.Conv3d(16, 16, kernel, padding=pad), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3, 4)))


def train_classifier(classes: int, shape, seed: int = 0, steps: int = 200) -> nn.Module:
    """A `Classifier` trained with CE on `blob_images` of `shape`; kernels of one voxel along
    an axis of size 1."""
    torch.manual_seed(seed)
    model = Classifier(classes, tuple(3 if s > 1 else 1 for s in shape))
    x, y = blob_images(512, classes, shape, seed)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


class Broadcast(nn.Module):
    """A classifier presented as a segmenter: its logits `[B, K]` broadcast to every voxel,
    `[B, K, D, H, W]`, so voxel-wise losses are the classifier's and Dice is 1 where the
    class is right and 0 where it is wrong."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        z = self.classifier(x)
        return z.view(*z.shape, 1, 1, 1).expand(*z.shape, *x.shape[2:])

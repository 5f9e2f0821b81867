"""Training augmentations of the paper's recipe, as MONAI dictionary transforms.

Rotation +-15 degrees per axis (p 0.5), scaling 0.85-1.15 (p 0.5), mirroring on each axis
(p 0.5), gamma 0.7-1.5 (p 0.2), contrast 0.75-1.25 around the mean (p 0.2) and brightness
x0.75-1.25 (p 0.2). Spatial transforms act on the pre-augmentation crop; the patch is then
cropped from its centre, so rotations do not bring padding into the patch.
"""
from __future__ import annotations

import math

import monai.transforms as T
import numpy as np


def build_augmentation(patch_size) -> T.Compose:
    angle = math.radians(15)
    keys = ["image", "label"]
    return T.Compose([
        T.RandRotated(keys, range_x=angle, range_y=angle, range_z=angle, prob=0.5,
                      mode=("bilinear", "nearest"), padding_mode="border"),
        T.RandZoomd(keys, prob=0.5, min_zoom=0.85, max_zoom=1.15, mode=("trilinear", "nearest"),
                    padding_mode="edge"),
        T.CenterSpatialCropd(keys, roi_size=list(patch_size)),
        T.RandFlipd(keys, prob=0.5, spatial_axis=0),
        T.RandFlipd(keys, prob=0.5, spatial_axis=1),
        T.RandFlipd(keys, prob=0.5, spatial_axis=2),
        T.RandAdjustContrastd("image", prob=0.2, gamma=(0.7, 1.5)),
        T.RandScaleIntensityFixedMeand("image", factors=0.25, prob=0.2),
        T.RandScaleIntensityd("image", factors=0.25, prob=0.2),
    ])


def augment(transform: T.Compose, image: np.ndarray, label: np.ndarray, seed: int):
    """Apply `transform` reproducibly: `[C, ...]` image and `[...]` label -> tensors
    (`[C, *patch]` float32, `[*patch]` int64)."""
    transform.set_random_state(seed=seed % (2 ** 32))
    out = transform({"image": image.astype(np.float32), "label": label[None].astype(np.float32)})
    img = out["image"].as_tensor() if hasattr(out["image"], "as_tensor") else out["image"]
    lab = out["label"].as_tensor() if hasattr(out["label"], "as_tensor") else out["label"]
    return img.float().contiguous(), lab[0].round().long().contiguous()

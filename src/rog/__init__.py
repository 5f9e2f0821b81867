"""rog: robust general 3D medical image segmentation (ROG lattice network, Free adversarial
training) and a robustness benchmark (AutoAttack for volumetric segmentation)."""

__version__ = "0.1.0"

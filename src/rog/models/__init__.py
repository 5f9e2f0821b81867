"""Models: the ROG lattice network and a registry (ROG, MONAI DynUNet baseline, user modules)."""
from rog.models.registry import build_model, count_parameters, register_model
from rog.models.rog import ROG, lattice

__all__ = ["ROG", "lattice", "build_model", "count_parameters", "register_model"]

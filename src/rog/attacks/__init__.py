"""The attack library: AutoAttack for 3D segmentation, for any model (threat model, losses,
attacks). The benchmark that runs them, its records and checks live in `rog.bench`."""
from rog.attacks.apgd import APGD
from rog.attacks.base import Attack
from rog.attacks.fab import FAB
from rog.attacks.pgd import PGD, CosPGD, SegPGD
from rog.attacks.square import Square
from rog.attacks.threat import ThreatModel

__all__ = ["ThreatModel", "Attack", "PGD", "SegPGD", "CosPGD", "APGD", "FAB", "Square"]

"""The attack library: AutoAttack for 3D segmentation, for any model (threat model, losses,
attacks). The benchmark that runs them, its records and checks live in `rog.bench`.

>>> import torch
>>> from rog.attacks import APGD, ThreatModel
>>> net = torch.nn.Conv3d(1, 3, 3, padding=1)                 # any model: [B, C, ...] -> logits [B, K, ...]
>>> x = torch.rand(2, 1, 8, 8, 8)
>>> y = torch.randint(0, 3, (2, 8, 8, 8))                      # or MONAI's [B, 1, D, H, W]
>>> attack = APGD(net, ThreatModel(8), iters=3)                # eps 8/255 of each channel's range
>>> x_adv = attack(x, y)
>>> bool(((x_adv - x).abs() <= 8 / 255 * (x.amax() - x.amin()) + 1e-6).all())
True
>>> len(attack.info["dice"])                                   # per instance, at x_adv
2
"""
from rog.attacks.apgd import APGD
from rog.attacks.base import Attack
from rog.attacks.fab import FAB
from rog.attacks.pgd import PGD, CosPGD, RightPGD, SegPGD
from rog.attacks.square import Square
from rog.attacks.threat import ThreatModel

__all__ = ["ThreatModel", "Attack", "PGD", "SegPGD", "CosPGD", "RightPGD", "APGD", "FAB", "Square"]

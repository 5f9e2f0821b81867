"""`rog train`'s adversarial-training options (an argument group of their own: the defence's
recipe, `rog.train.trainer.TrainConfig`'s adversarial fields)."""
from __future__ import annotations

from rog.cli.types import EPS, POSITIVE_INT, number


def adversarial_options(s, unset) -> None:
    """Add the options to the `train` sub-parser `s`; `unset`: argparse.SUPPRESS, so that an
    option not given keeps TrainConfig's default (or the run's own on --resume)."""
    g = s.add_argument_group("adversarial training")
    g.add_argument("--adv", choices=["free", "pgd", "artefact", "noise"], default=unset,
                   help="adversarial training: Free AT, PGD-AT (L-inf), Free-style against worst-case scanner "
                   "artefacts, or Gaussian noise (--noise) for rog certify (default: none)")
    g.add_argument("--noise", type=number(float, 0, lo_open=True), default=unset, metavar="SIGMA",
                   help="train on Gaussian noise of sd SIGMA on the range-normalised scale, the noise rog certify "
                   "smooths with (Cohen et al.; implies --adv noise) (default: none)")
    g.add_argument("--eps", type=EPS, default=unset, help="adversarial eps on the /255 range scale (default 8)")
    g.add_argument("--replays", type=POSITIVE_INT, default=unset, help="Free AT minibatch replays m (default 5)")
    g.add_argument("--no-divide-epochs", dest="divide_epochs", action="store_false", default=unset,
                   help="Free AT: do not divide epochs by m (default: divide)")
    g.add_argument("--pgd-steps", type=POSITIVE_INT, default=unset, help="PGD-AT steps (default 5)")
    g.add_argument("--eps-warmup", type=number(float, 0, 1), default=unset, metavar="FRACTION",
                   help="eps rises linearly from 0 over this fraction of the run's updates (default 0: none)")
    g.add_argument("--clean-weight", type=number(float, 0, 1), default=unset, metavar="W",
                   help="loss = W * clean loss + (1 - W) * adversarial loss (default 0: adversarial only)")
    g.add_argument("--trades", type=number(float, 0), default=unset, metavar="BETA",
                   help="loss = clean loss + BETA * KL(clean || adversarial prediction), TRADES; instead of "
                   "--clean-weight (default 0: off)")
    g.add_argument("--select", choices=["patch", "robust"], default=unset,
                   help="the best checkpoint by 'patch' (clean Dice of centred validation patches) or 'robust' (mean "
                   "of clean and APGD-CE Dice on whole validation volumes) (default: patch)")
    g.add_argument("--artefacts", nargs="+", default=unset,
                   help="--adv artefact: the artefacts drawn per batch (default: bias gamma blur noise motion)")
    g.add_argument("--artefact-severity", type=number(int, 1, 5), default=unset,
                   help="--adv artefact: severities drawn from 1 to this (default 5)")
    g.add_argument("--select-iters", type=POSITIVE_INT, default=unset,
                   help="--select robust: APGD-CE iterations at --eps (default 3)")

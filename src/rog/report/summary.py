"""The report's own document (`summary.json`), typed: what `rog report` returns to the CLI and
the experiment, and writes beside the page."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from rog.evaluate.seeds import Gain, SeedGroup, Stat

if TYPE_CHECKING:  # evaluate.atlas reads NIfTI through torch-importing modules; the report needs only the type
    from rog.evaluate.atlas import AtlasReference


@dataclass
class ModelScores:
    """One results folder of attacks: clean Dice (mean and per class), the worst-case AUC and
    PGD's and APGD-CE's, per eps the results' `EpsSummary` with its robust accuracy at the
    report's tau (`ReportSummary.tau`), the model's own tau (half its own mean clean Dice, which
    its results used), each check's status, the model's size and the run's test scores (`rog
    evaluate`'s summary)."""

    clean_dice: float
    clean_dice_per_class: list
    auc_worst_case: float | None
    auc_pgd_apgd: dict | None
    eps: dict
    own_tau: float
    checks: dict
    parameters: int | None
    gflops: float | None
    test: dict | None


@dataclass
class Tau:
    """The one success threshold every robust accuracy of a report uses: `value`, and `source`,
    the model label whose mean clean Dice it halves or "--tau" where it was given."""

    value: float
    source: str

    def text(self) -> str:
        """'tau 0.155, half the mean clean Dice of rog_clean' (or 'given with --tau')."""
        return f"tau {self.value:.3f}, " + ("given with --tau" if self.source == "--tau"
                                            else f"half the mean clean Dice of {self.source}")


@dataclass
class CorruptionScores:
    clean_dice: float
    mean_corruption_dice: float
    corruptions: dict  # name -> `CorruptionStats`
    mce: float | None  # relative to the baseline model, where one was named


@dataclass
class Seeds:
    groups: dict  # model label -> `SeedGroup`
    gain: Gain | None = None  # the gain asked for (`build_report(gain=...)`: the demo's defence over its reference)
    findings: list = field(default_factory=list)  # without one: the most robust model's `Gain` over each other


@dataclass
class Learning:
    """Whole-case clean test Dice per model label (over seeds) beside the atlas reference."""

    reference: AtlasReference
    best_single: str | None  # the training label that alone scores best (chosen on the test cases)
    models: dict  # label -> `Stat`


@dataclass
class ReportSummary:
    models: dict = field(default_factory=dict)  # model name -> ModelScores
    seeds: Seeds = field(default_factory=lambda: Seeds({}))
    learning: Learning | None = None
    figures: list = field(default_factory=list)
    corruptions: dict = field(default_factory=dict)  # model name -> CorruptionScores
    artefacts: dict = field(default_factory=dict)  # model name -> `rog.results.ArtefactSummary`
    table_eps: float | None = None
    common_eps: list | None = None  # where the runs' eps grids differ: the eps every figure compares them at
    tau: Tau | None = None  # the task's tau of every robust accuracy in `models` (None: no attack results)
    certified: dict = field(default_factory=dict)  # model name -> [`rog.evaluate.bracket.Bracket`] per noise level
    modalities: dict = field(default_factory=dict)  # model name -> `rog.results.ModalitySummary`
    eps_unit: str = "range"  # every attack's eps is in this unit (`rog.bench.units.UNITS`)

    def to_json(self) -> dict:
        return asdict(self)


__all__ = ["CorruptionScores", "Gain", "Learning", "ModelScores", "ReportSummary", "SeedGroup", "Seeds", "Stat", "Tau"]

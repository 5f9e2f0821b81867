"""The results document of a benchmark (`results.json`): typed, versioned, and the one module
that spells its keys.

The attack benchmark, the corruption sweep, the worst-case artefact sweep and the certification
write a `Results`; the report, the CLI and the
demo read one; every other module uses the attributes, so renaming a field is an error where
it is used, not a silently missing number. This module imports no torch (the report renders
without it).

Versions: 1 (no "version" key) is the document written before the schema existed; it has
the same fields and loads as it is. 2 adds "version". A document of a newer version, or with a
key this version does not know, is refused by name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rog.errors import RogError, refuse_unknown_keys

VERSION = 2


class ResultsError(RogError):
    """A results document this rog cannot read (a newer version, an unknown key, a wrong kind)."""


def _build(cls, raw: dict, where: str, **dicts):
    """`cls(**raw)` with an unknown key refused by name; `dicts`: field name -> the dataclass
    of that dict-valued field's values, built the same way."""
    refuse_unknown_keys(raw, cls, where, ResultsError)
    obj = cls(**raw)
    for name, item in dicts.items():
        setattr(obj, name, {k: _build(item, v, where) for k, v in getattr(obj, name).items()})
    return obj


# the units a benchmark's eps may be given in (`rog.bench.units`), and how a number in each is
# written after it ("8/255", "40 HU")
EPS_UNITS = {"range": "/255 of each channel's per-case intensity range",
             "hu": "Hounsfield units of the scan (CT channels)",
             "sd": "standard deviations of each channel's intensities over the case's labelled voxels"}
EPS_SHORT = {"range": "/255", "hu": " HU", "sd": " sd"}

@dataclass
class Score:
    """Dice of one prediction: mean over the foreground classes and per class (None: a class
    absent from both prediction and reference)."""

    dice: float
    dice_per_class: list


@dataclass
class ModelInfo:
    """The model's summary (`rog.models.summary.row`): name, parameters, GFLOPs at `input`."""

    model: str
    parameters: int
    gflops: float
    input: list


@dataclass
class Meta:
    """What the report says about the model and the cases: its label, run and data folders,
    where the cases come from (`cases_source`: a key of `rog.bench.cases.SOURCES`, and its
    text), its summary, class names, the run's test scores (`rog evaluate`'s summary), its
    training seed, and for another tool's model how its inference was run."""

    label: str = ""
    run: str | None = None
    data: str | None = None
    cases_source: str | None = None
    cases_source_text: str = "source not recorded"
    model: ModelInfo | None = None
    class_names: list = field(default_factory=list)
    test: dict | None = None
    seed: int | None = None
    deployment: dict | None = None  # another tool's inference as run (`ExternalModel.deployment`)

    def test_dice(self) -> list | None:
        """Per-class mean test Dice of the run's whole-case predictions, or None."""
        if not self.test:
            return None
        # `rog evaluate`'s class means; before nnU-Net's keys joined the file they were "mean"
        return (self.test.get("mean_per_class") or self.test["mean"])["dice"]

    @classmethod
    def from_json(cls, raw: dict, where: str) -> "Meta":
        m = _build(cls, dict(raw), where)
        m.model = _build(ModelInfo, m.model, where) if m.model else None
        return m


@dataclass
class Check:
    """A validity check: `status` is "pass", "fail", "warn" or "skipped"."""

    name: str
    status: str
    detail: str


@dataclass
class AttackRecord:
    """One case x attack x eps x budget. A skipped attack (`skipped`: why) has no measurements.
    `norm`: the perturbation's size on the /255 scale; `in_ball`, `in_box`, `finite`: the raw
    output's validity; `found` and `reason`: FAB-T's own verdict."""

    case: str
    attack: str
    attack_id: str
    eps: float
    budget: int
    dice: float | None = None
    dice_per_class: list | None = None
    broken: bool | None = None
    norm: float | None = None
    in_ball: bool | None = None
    in_box: bool | None = None
    finite: bool | None = None
    seconds: float | None = None
    iterations: int | None = None
    queries: int | None = None
    noop_queries: int | None = None
    found: bool | None = None
    reason: str | None = None
    skipped: str | None = None
    # `rog.evaluate.lesions`' counts per class of the attacked prediction, with "clean_missed"
    # and "volume_change" (from the clean prediction); None in older records
    lesions: dict | None = None
    # the radius on the /255 scale of each channel's range that eps (in the threat's unit, times
    # its channel multiples) was on this case; None where it is eps on every channel
    channel_eps: list | None = None

    def valid(self) -> bool:
        """Inside the eps-ball and the box, and finite."""
        return bool(self.in_ball and self.in_box and self.finite)


@dataclass
class CorruptionRecord:
    """One case x corruption x severity (1-5)."""

    case: str
    corruption: str
    severity: int
    dice: float
    dice_per_class: list
    seconds: float
    finite: bool


@dataclass
class ModalityRecord:
    """One case x input channel x replacement (`rog.bench.modality`: "zero", "mean", or an
    artefact "NAME:SEVERITY" on that channel alone)."""

    case: str
    channel: int
    replacement: str
    dice: float
    dice_per_class: list
    seconds: float
    finite: bool


@dataclass
class ArtefactRecord:
    """One case x artefact x severity: the worst artefact of that size found by random draws
    and by the search on its parameters (`rog.artefacts`)."""

    case: str
    artefact: str
    severity: int
    dice: float  # the worst case: the lower of the search's and the worst draw's
    dice_per_class: list  # at the worst case
    random_dice: float  # mean over the draws (what `rog corrupt` estimates)
    random_worst: float  # the worst draw
    search_dice: float
    by: str  # "search", "random" (the search kept the worst draw) or "none" (nothing lowered Dice)
    parameters: dict  # the worst artefact's physical parameters
    draws: int
    iterations: int
    seconds: float
    in_bound: bool  # the search's parameters within their bound
    finite: bool
    search: str | None = None  # "apgd" or "random" (derivative-free); None: written before the choice existed


@dataclass
class CertifyRecord:
    """One case x noise level: randomized smoothing's certified Dice (`rog.certify`). Per
    radius of `radii` (L2, on the range-normalised scale; `l2_eps`: the same as `rog attack
    --norm l2 --eps`, per voxel on the /255 scale): the lower bound of the smoothed model's
    Dice over every perturbation of that norm (mean over classes and per class), and the share
    of scored voxels certified. `smoothed_dice`: the smoothed labels' Dice, every voxel its
    majority class (no abstention). `elements`: the voxels x channels of the case's input;
    `input_range`: each channel's max - min there, the scale of the radii (both None in older
    records)."""

    case: str
    sigma: float
    samples: int  # n, the copies that estimate; n0 more chose each voxel's class
    radii: list
    l2_eps: list
    certified_dice: list
    certified_dice_per_class: list
    certified_share: list
    smoothed_dice: float
    smoothed_dice_per_class: list
    seconds: float
    finite: bool
    elements: int | None = None
    input_range: list | None = None

    @property
    def dice(self) -> float:
        """The smoothed labels' Dice: the one Dice of a record, as the sweep logs each record's."""
        return self.smoothed_dice


@dataclass
class EpsSummary:
    """One eps of an attack summary: worst case over the attacks per case, then the mean."""

    worst_case_dice: float
    robust_accuracy: float
    worst_case_dice_per_class: list
    attacks: dict  # attack id -> mean Dice
    cases: int
    found_by: dict = field(default_factory=dict)  # case -> the attack id of its worst case ("clean": none lowered it)
    # lesions (`rog.evaluate.lesions`), None where the records hold none: at each case's worst
    # case, the reference lesions missed and the components invented, summed over cases and
    # classes; and the share of cases where no attack missed a lesion the clean prediction found
    lesions_missed: int | None = None
    lesions_invented: int | None = None
    lesion_robust_accuracy: float | None = None


@dataclass
class AttackSummary:
    tau: float
    clean_dice: float
    eps: dict  # eps key ("8.0") -> EpsSummary
    auc_worst_case: float | None

    def eps_items(self) -> list[tuple[str, EpsSummary]]:
        """(eps key, summary) in increasing eps."""
        return sorted(self.eps.items(), key=lambda kv: float(kv[0]))


@dataclass
class CorruptionStats:
    severity: dict  # severity key ("3") -> mean Dice
    mean_dice: float
    relative_auc: float | None

    def levels(self) -> list[str]:
        """Severity keys in increasing order."""
        return sorted(self.severity, key=int)


@dataclass
class CorruptionSummary:
    clean_dice: float
    corruptions: dict  # corruption name -> CorruptionStats
    mean_corruption_dice: float
    worst_case: dict  # severity key -> mean over cases of the worst corruption's Dice


@dataclass
class ModalitySummary:
    """Per channel key ("0") and replacement: the mean Dice over cases (`dice`), per class
    (`dice_per_class`), the share of cases at or above tau (`robust_accuracy`); `worst`: per
    replacement, the mean over cases of the lowest Dice over the channels replaced."""

    clean_dice: float
    dice: dict
    dice_per_class: dict
    robust_accuracy: dict
    worst: dict


@dataclass
class ArtefactStats:
    """One artefact's mean Dice per severity key ("3"): the per-case worst case, the search
    alone, the mean random draw and the worst draw; the share of cases it does not break
    (Dice >= tau); the worst-case curve's area over severities 0..5 relative to clean Dice."""

    worst: dict
    search: dict
    random: dict
    random_worst: dict
    robust_accuracy: dict
    relative_auc: float | None

    def levels(self) -> list[str]:
        """Severity keys in increasing order."""
        return sorted(self.worst, key=int)


@dataclass
class ArtefactSummary:
    tau: float
    clean_dice: float
    artefacts: dict  # artefact name -> ArtefactStats
    worst_case: dict  # severity key -> mean over cases of the worst artefact's worst case


@dataclass
class CertifyStats:
    """One noise level's means over cases: the certified Dice lower bound and the certified
    share per radius key ("0.06"), and the smoothed labels' Dice."""

    certified_dice: dict
    certified_share: dict
    smoothed_dice: float
    cases: int


@dataclass
class CertifySummary:
    tau: float
    clean_dice: float  # the base model's
    sigmas: dict  # sigma key ("0.12") -> CertifyStats


@dataclass
class Provenance:
    """What produced a results folder; it is continued only under the same."""

    config: dict
    cases: list | None = None
    weights: str | None = None  # sha256 of the checkpoint
    model: str | None = None  # the model's name (registered, package.module:factory, the tool's), with or without weights
    deployment: dict | None = None  # another tool's inference as run (`Meta.deployment`: folds, mirroring, ...)

    def mismatch(self, current: "Provenance") -> str | None:
        """Why results written under this provenance may not be continued under `current`."""
        for mine, theirs, what in ((self.config, current.config, "configuration"),
                                   (self.cases, current.cases, "case list"),
                                   (self.weights, current.weights, "model weights")):
            if mine != theirs:
                return f"written with a different {what}"
        if self.model is not None and current.model is not None and self.model != current.model:
            return f"written by another model ({self.model}, not {current.model})"  # older folders name none
        if self.deployment is not None and current.deployment is not None and self.deployment != current.deployment:
            return f"written with another deployment of the model ({self.deployment.get('text')})"
        return None


KINDS = {"attack": (AttackRecord, AttackSummary), "corruption": (CorruptionRecord, CorruptionSummary),
         "artefact": (ArtefactRecord, ArtefactSummary), "certify": (CertifyRecord, CertifySummary),
         "modality": (ModalityRecord, ModalitySummary)}
# the dict-valued field of each summary and the dataclass of its values
_SUMMARY_DICTS = {AttackSummary: {"eps": EpsSummary}, CorruptionSummary: {"corruptions": CorruptionStats},
                  ArtefactSummary: {"artefacts": ArtefactStats}, CertifySummary: {"sigmas": CertifyStats},
                  ModalitySummary: {}}


@dataclass
class Results:
    """One benchmark of one model: `kind` "attack" (records per case x attack x eps x budget)
    or "corruption" (per case x corruption x severity) or "artefact" (per case x artefact x
    severity, worst case) or "certify" (per case x noise level) or "modality" (per case x channel x
    replacement). `summary` and `checks` exist once the
    run has finished; `threat` and `attack_configs` only for attacks."""

    kind: str
    config: dict
    num_classes: int
    tau: float
    clean: dict  # case -> Score
    records: list
    complete: bool
    meta: Meta
    provenance: Provenance
    summary: AttackSummary | CorruptionSummary | ArtefactSummary | CertifySummary | ModalitySummary | None = None
    checks: list = field(default_factory=list)
    threat: dict | None = None
    attack_configs: dict = field(default_factory=dict)
    version: int = VERSION

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def perturbed(self) -> str:
        """Where the perturbation lives, in words, for the report."""
        if self.meta.cases_source == "folders":  # another tool's or a user's model on raw scans
            return "the scan as stored, through the model's whole deployed pipeline; Dice against the label as stored"
        if self.config.get("scope") == "patch":
            return ("a label-centred patch of each case on rog's preprocessed grid (the paper's protocol: "
                    "for training-time evaluation and speed)")
        return "whole cases on rog's preprocessed grid"

    def measured(self) -> list:
        """The records with measurements (skipped attacks left out)."""
        return [r for r in self.records if not getattr(r, "skipped", None)]

    def to_json(self) -> dict:
        doc = asdict(self)
        if self.threat is None:
            del doc["threat"]
        return doc

    @classmethod
    def from_json(cls, raw: dict, where: str) -> "Results":
        """Read a document of any version this rog knows; `where` (the file) names it in errors."""
        raw = dict(raw)
        version = raw.pop("version", 1)
        if not isinstance(version, int) or not 1 <= version <= VERSION:
            raise ResultsError(f"{where}: results document version {version!r}; this rog reads versions 1 to "
                               f"{VERSION} (written by a newer rog? upgrade it)")
        kind = raw.get("kind", "attack")  # version 1 wrote no kind before the corruption sweep existed
        if kind not in KINDS:
            raise ResultsError(f"{where}: unknown results kind {kind!r}; known: {sorted(KINDS)}")
        record_cls, summary_cls = KINDS[kind]
        raw["kind"] = kind
        raw.setdefault("provenance", {"config": raw.get("config")})
        r = _build(cls, raw, where, clean=Score)
        r.version = VERSION
        r.records = [_build(record_cls, v, where) for v in r.records]
        r.meta = Meta.from_json(r.meta, where)
        r.provenance = _build(Provenance, r.provenance, where)
        if r.summary is not None:
            r.summary = _build(summary_cls, r.summary, where, **_SUMMARY_DICTS[summary_cls])
        r.checks = [_build(Check, c, where) for c in r.checks]
        return r


# the columns of results.csv per kind (the JSON holds every field)
CSV_COLUMNS = {"attack": ["case", "attack", "eps", "budget", "dice", "broken", "norm", "seconds", "in_ball", "in_box",
                          "finite", "found", "skipped"],
               "corruption": ["case", "corruption", "severity", "dice", "seconds", "finite"],
               "artefact": ["case", "artefact", "severity", "dice", "random_dice", "random_worst", "search_dice", "by",
                            "search", "draws", "iterations", "seconds", "in_bound", "finite"],
               "certify": ["case", "sigma", "samples", "smoothed_dice", "seconds", "finite"],
               "modality": ["case", "channel", "replacement", "dice", "seconds", "finite"]}

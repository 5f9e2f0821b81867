"""The folder layouts of rog: the one place that knows the names of the files in them.

    WORKDIR/                  Workdir: one dataset's work directory
      fingerprint.json, plan.json, preprocessed/
      runs/NAME/              RunDir: one trained model
        plan.json, config.json, splits.json, checkpoint_{best,last}.pt, log.csv, curves.png,
        postprocessing.json, test_predictions/, test_eval.{json,csv}, tensorboard/
      attacks/NAME/           ResultsDir: one benchmark of one model
        results.json, results.csv (results.rankN.* while torchrun shards run), qualitative.npz,
        volumes/CASE/NAME.nii.gz or the scan's format (--save-volumes)
    PREDICTIONS/              PredictionsDir: `rog predict -o`
      NAME.nii.gz (or the input's format), NAME.npz (probabilities), rog_predict.json

Every other module asks these classes for a path; none spells a file name of these folders.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rog.atomic import atomic_path, write_json
from rog.errors import RogError, read_arrays, read_json_object
from rog.results import Results, ResultsError


@dataclass(frozen=True)
class RunDir:
    """A training run's folder."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def workdir(self) -> "Workdir":
        return Workdir(self.path.parent.parent)

    @property
    def plan(self) -> Path:
        return self.path / "plan.json"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def splits(self) -> Path:
        return self.path / "splits.json"

    def checkpoint(self, which: str) -> Path:
        """`which`: "best" or "last"."""
        return self.path / f"checkpoint_{which}.pt"

    def weights(self) -> Path:
        """The checkpoint a trained model is used from: the best, or the last where no
        validation has chosen one yet."""
        best = self.checkpoint("best")
        return best if best.is_file() else self.checkpoint("last")

    @property
    def log(self) -> Path:
        return self.path / "log.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def postprocessing(self) -> Path:
        return self.path / "postprocessing.json"

    @property
    def test_predictions(self) -> Path:
        return self.path / "test_predictions"

    @property
    def test_eval_stem(self) -> Path:
        """Stem of the test-set scores (`rog evaluate` writes STEM.json and STEM.csv)."""
        return self.path / "test_eval"

    @property
    def test_eval(self) -> Path:
        return self.test_eval_stem.with_suffix(".json")

    def is_run(self) -> bool:
        return self.config.is_file()

    def read_splits(self) -> dict | None:
        return read_json_object(self.splits) if self.splits.is_file() else None

    def read_config(self) -> dict:
        return read_json_object(self.config) if self.config.is_file() else {}

    def postprocessing_steps(self) -> dict | None:
        if not self.postprocessing.is_file():
            return None
        raw = read_json_object(self.postprocessing)
        if "steps" not in raw:
            raise RogError(f"{self.postprocessing}: no 'steps' (a rog postprocessing.json has them)")
        return raw["steps"]

    def read_test_eval(self) -> dict | None:
        return read_json_object(self.test_eval) if self.test_eval.is_file() else None


@dataclass(frozen=True)
class ResultsDir:
    """A benchmark's output folder (attack results of one model)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    def results(self, rank: int | None = None) -> Path:
        """results.json, or one rank's shard while a sharded run is in progress."""
        return self.path / ("results.json" if rank is None else f"results.rank{rank}.json")

    def csv(self, rank: int | None = None) -> Path:
        return self.results(rank).with_suffix(".csv")

    @property
    def qualitative(self) -> Path:
        return self.path / "qualitative.npz"

    def volume(self, case: str, name: str, ending: str = ".nii.gz") -> Path:
        """`--save-volumes`' image NAME of CASE (`rog.bench.volumes`)."""
        return self.path / "volumes" / case / f"{name}{ending}"

    def volumes(self) -> dict[str, dict[str, Path]]:
        """The saved volumes per case, {case: {name: file}} (empty without `--save-volumes`)."""
        from rog.data.formats import images_in  # SimpleITK only where volumes are listed
        root = self.path / "volumes"
        return {d.name: images_in(d) for d in sorted(root.iterdir()) if d.is_dir()} if root.is_dir() else {}

    def read_qualitative(self) -> dict[str, dict[str, np.ndarray]]:
        """The report's qualitative arrays, {eps key: {name: array}} (empty when none)."""
        out: dict[str, dict[str, np.ndarray]] = {}
        if not self.qualitative.is_file():
            return out
        for k, array in read_arrays(self.qualitative, ResultsError).items():
            key, name = k.split("/")
            out.setdefault(key, {})[name] = array
        return out

    def write_qualitative(self, panels: dict[str, dict[str, np.ndarray]]) -> None:
        """Write {eps key: arrays} as one .npz, atomically."""
        flat = {f"{key}/{name}": arr for key, arrays in panels.items() for name, arr in arrays.items()}
        with atomic_path(self.qualitative) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **flat)

    def exists(self) -> bool:
        return self.results().is_file()

    def read(self, rank: int | None = None) -> Results:
        """The results document (`rog.results`; a rank's shard with `rank`), of any version
        this rog reads; a malformed one is a `ResultsError` naming the file."""
        path = self.results(rank)
        try:
            return Results.from_json(read_json_object(path, ResultsError), str(path))
        except TypeError as e:  # a required field missing
            raise ResultsError(f"{path}: not a results document ({e})") from e

    def write(self, results: Results, rank: int | None = None) -> None:
        write_json(self.results(rank), results.to_json())

    def finished(self) -> bool:
        return self.exists() and self.read().finished


@dataclass(frozen=True)
class PredictionsDir:
    """`rog predict`'s output folder: label maps NAME + the image's ending (NAME/ for a DICOM
    series), NAME.npz probabilities (array
    "probabilities" `[K, X, Y, Z]` in the image file's voxel order, and its "affine"; no
    pickle), and rog_predict.json, what made them."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def label(self, name: str, ending: str = ".nii.gz") -> Path:
        return self.path / f"{name}{ending}"

    def probabilities(self, name: str) -> Path:
        return self.path / f"{name}.npz"

    @property
    def provenance(self) -> Path:
        return self.path / "rog_predict.json"

    def finished(self, name: str, ending: str = ".nii.gz", probabilities: bool = False) -> bool:
        """Whether the case's files exist (each written atomically: existing means complete)."""
        return self.label(name, ending).exists() and (not probabilities or self.probabilities(name).is_file())

    def write_probabilities(self, name: str, probs: np.ndarray, affine: np.ndarray) -> None:
        with atomic_path(self.probabilities(name)) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, probabilities=probs.astype(np.float32, copy=False), affine=affine)

    def read_probabilities(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities `[K, X, Y, Z]`, affine `[4, 4]`) of a case."""
        data = read_arrays(self.probabilities(name))
        return data["probabilities"], data["affine"]


@dataclass(frozen=True)
class Workdir:
    """One dataset's work directory (default ./rog_work/<dataset name>)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def for_dataset(cls, ds, workdir: str | Path | None = None) -> "Workdir":
        return cls(Path(workdir) if workdir else Path("rog_work") / ds.name)

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def preprocessed(self) -> Path:
        return self.root / "preprocessed"

    @property
    def atlas_transfer(self) -> Path:
        """The atlas-transfer reference on the labelled test cases (`rog.evaluate.atlas`)."""
        return self.root / "atlas_transfer.json"

    def run(self, name: str) -> RunDir:
        return RunDir(self.root / "runs" / name)

    def results(self, name: str) -> ResultsDir:
        return ResultsDir(self.root / "attacks" / name)

    def results_of(self, run: RunDir) -> list[ResultsDir]:
        """The benchmark folders of a run (`attacks/RUN-*`) that hold results."""
        return [ResultsDir(d) for d in sorted((self.root / "attacks").glob(f"{run.name}-*"))
                if ResultsDir(d).exists()]

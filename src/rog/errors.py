"""The one base class of the errors a user can cause: a malformed dataset or file, a nonsense
argument, a results folder of another run. Each module raises its own subclass (the message
names the file or argument and the problem); the CLI catches this class once and prints one
line, so a new error class cannot be forgotten there (a test walks the package for them)."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path


class RogError(ValueError):
    """A user error; subclasses say which layer found it. A ValueError, as before it existed."""


def refuse_unknown_keys(raw: dict, cls, where: str, error: type[RogError] = RogError) -> None:
    """The one rule of every configuration file (plan.json, a run's config.json): a key the
    dataclass `cls` does not have is refused, named, with `where` (the file), not dropped."""
    unknown = sorted(set(raw) - {f.name for f in fields(cls)})
    if unknown:
        raise error(f"{where}: unknown key(s) {unknown}; known: {sorted(f.name for f in fields(cls))}")


def read_json(path: Path, error: type[RogError] = RogError):
    """The JSON value in the file `path`; a missing or unreadable file or malformed JSON (a
    file truncated by a killed process) is an `error` naming the file."""
    if not Path(path).is_file():
        raise error(f"{path}: not found")
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: unreadable ({e})") from e
    return parse_json(text, str(path), error)


def parse_json(text: str, where: str, error: type[RogError] = RogError):
    """The JSON value of `text`, read from `where` (a file, or a field of one); malformed JSON
    is an `error` naming `where`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{where}: invalid JSON ({e}); the file may be truncated: remove it or make it again") from e


def read_arrays(path: Path, error: type[RogError] = RogError, mmap_mode: str | None = None):
    """The arrays of an .npz file (a dict, every array loaded) or the array of an .npy file
    (memory-mapped with `mmap_mode`); pickled objects are refused. A missing, truncated or
    malformed file is an `error` naming the file."""
    import zipfile

    import numpy as np
    if not Path(path).is_file():
        raise error(f"{path}: not found")
    try:
        if Path(path).suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise error(f"{path}: not a readable array file ({type(e).__name__}: {e}); the file may be truncated: "
                    "remove it or make it again") from e


def read_json_object(path: Path, error: type[RogError] = RogError) -> dict:
    """The JSON object in the file `path` (`read_json`); another JSON value is an `error`."""
    raw = read_json(path, error)
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a JSON object")
    return raw


class UsageError(RogError):
    """An argument makes no sense, or arguments that cannot go together; the message names them."""

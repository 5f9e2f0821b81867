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
    """The JSON value in the file `path`; a missing file or malformed JSON is an `error`
    naming the file."""
    if not Path(path).is_file():
        raise error(f"{path}: not found")
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON ({e})") from e


def read_json_object(path: Path, error: type[RogError] = RogError) -> dict:
    """The JSON object in the file `path` (`read_json`); another JSON value is an `error`."""
    raw = read_json(path, error)
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a JSON object")
    return raw


class UsageError(RogError):
    """An argument makes no sense, or arguments that cannot go together; the message names them."""

"""The one base class of the errors a user can cause: a malformed dataset or file, a nonsense
argument, a results folder of another run. Each module raises its own subclass (the message
names the file or argument and the problem); the CLI catches this class once and prints one
line, so a new error class cannot be forgotten there (a test walks the package for them)."""
from __future__ import annotations

from dataclasses import fields


class RogError(ValueError):
    """A user error; subclasses say which layer found it. A ValueError, as before it existed."""


def refuse_unknown_keys(raw: dict, cls, where: str, error: type[RogError] = RogError) -> None:
    """The one rule of every configuration file (plan.json, a run's config.json): a key the
    dataclass `cls` does not have is refused, named, with `where` (the file), not dropped."""
    unknown = sorted(set(raw) - {f.name for f in fields(cls)})
    if unknown:
        raise error(f"{where}: unknown key(s) {unknown}; known: {sorted(f.name for f in fields(cls))}")

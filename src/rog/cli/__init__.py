"""The `rog` command: `main` parses (`rog.cli.parser`), runs one command (`rog.cli.commands`:
a typed request to `rog.pipeline` or a library call, and what it prints), and turns every user
error into one line and exit code 2."""
from __future__ import annotations

import os
import sys

from rog.cli.parser import build_parser
from rog.errors import RogError
from rog.messages import level_for, log
from rog.progress import QUIET


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    before, level = os.environ.get(QUIET), log.level
    log.setLevel(level_for(args.quiet, args.verbose))
    if args.quiet:
        os.environ[QUIET] = "1"  # every progress bar, worker processes' too
    try:
        return int(args.fn(args) or 0)
    except (RogError, FileNotFoundError, PermissionError) as e:
        if args.debug:
            raise
        print(f"rog {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"rog {args.command}: interrupted; finished work is kept (run the same command to resume)",
              file=sys.stderr)
        return 130
    finally:  # a caller in the same process (a notebook, a test) gets its environment back
        log.setLevel(level)
        if before is None:
            os.environ.pop(QUIET, None)
        else:
            os.environ[QUIET] = before

"""What the command lines of bench and of plugins share (standard library only): argparse
types, and the rule that a bad input or environment ends with one error line and exit
status 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench.contract.errors import BenchError


def at_least(minimum: int, below: int | None = None):
    """An argparse type: an integer no smaller than `minimum` (and smaller than `below`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be below {below}, got {value}")
        return value
    return parse


def one_error_line(prog: str, command: Callable[[], int]) -> int:
    """`command()`'s exit status; a BenchError, or an OSError of the environment (a full
    disk, a folder that cannot be written or read), is one `prog: error:` line and 2."""
    try:
        return command()
    except BenchError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{prog}: error: {err.strerror or err}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 2

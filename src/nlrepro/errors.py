"""One exception type for every bad input the user can fix, and the stage wrapper that
turns it into one clear line on stderr and a non-zero exit."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class NLReproError(Exception):
    """A problem with the user's input (params, data files, checkpoints): its message is
    one line that names the offending key, file or field."""


def cli_main(fn: Callable[..., None]) -> Callable[..., None]:
    """Decorate a stage's ``main``: an ``NLReproError`` prints ``error: <message>`` and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NLReproError as exc:
            msg = " ".join(str(exc).split())  # always one line
            print(f"error: {msg}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper

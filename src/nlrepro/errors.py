"""One exception type for every bad input the user can fix, and the stage wrapper that
turns it into one clear line on stderr and a non-zero exit."""
from __future__ import annotations

import errno
import functools
import sys
from typing import Callable


class NLReproError(Exception):
    """A problem with the user's input (params, data files, checkpoints): its message is
    one line that names the offending key, file or field."""


# Environment errors the user fixes outside the code: each becomes one line too.
_ENV_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
               errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system",
               errno.EFBIG: "file too large (a file-size limit, ulimit -f?)"}


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def cli_main(fn: Callable[..., None]) -> Callable[..., None]:
    """Decorate a stage's ``main``: an ``NLReproError`` prints ``error: <message>`` and exits
    2; so does a permission, disk-full, quota or read-only error (with the file named),
    and a ``MemoryError``. Anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NLReproError as exc:
            print(f"error: {_one_line(str(exc))}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as exc:
            if exc.errno not in _ENV_ERRNOS:
                raise
            where = exc.filename or "writing the outputs"
            print(f"error: {where}: {_ENV_ERRNOS[exc.errno]}", file=sys.stderr)
            raise SystemExit(2) from None
        except MemoryError:
            print("error: out of memory (lower train.batch_size or the model preset)",
                  file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper

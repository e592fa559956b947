"""Process guardrails of a training run: one writer per run directory, and no trainer
that outlives the process that launched it.

* ``RunLock``: an exclusive ``flock`` on ``<run dir>/lock`` for the trainer's whole life,
  the holder's PID written inside. A second trainer on the same run (a `dvc repro` started
  while an orphan still trains) fails at once with one line naming that PID. The kernel
  drops the lock when the holder dies, however it dies, so a stale lock never blocks.
* ``die_with_parent``: on Linux, ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: when the parent
  (`dvc`, or the torchrun agent for a DDP worker) dies, even by ``kill -9``, the trainer
  gets SIGTERM instead of training on as an orphan reparented to PID 1. The setting
  survives ``exec``, so the torchrun agent the stage re-executes into keeps it too.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
from pathlib import Path

from nlrepro.errors import NLReproError

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` when the parent process dies; False where the
    platform has no such call (then an orphan is still possible). A parent that is
    already gone (reparented before the call) exits at once."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent == 1 or os.getppid() != parent:   # the parent died before prctl took effect
        os.kill(os.getpid(), sig)
    return True


class RunLock:
    """``with RunLock(run_dir, name):`` holds ``run_dir/lock`` exclusively, or fails at once
    with one line naming the holder."""

    def __init__(self, run_dir: Path, name: str):
        self.path, self.name, self._fd = Path(run_dir) / "lock", name, None

    def __enter__(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise NLReproError(f"{self.path}: cannot create the run lock "
                               f"({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise NLReproError(
                f"train {self.name}: another trainer (PID {holder}) is writing "
                f"{self.path.parent}; wait for it to finish or kill it, then rerun") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

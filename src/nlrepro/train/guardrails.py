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
  The parent is not always `dvc`: DVC runs each stage command through ``$SHELL -c``, and a
  shell that does not ``exec`` its last command (dash, Debian's ``/bin/sh``, never does)
  stays alive when `dvc` is killed. So under DVC (``DVC_STAGE`` set) a watchdog thread
  also watches the nearest ancestor that is the `dvc` process and sends the same signal
  when it is gone; torchrun workers find it through their agent the same way.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path

from nlrepro.errors import NLReproError

PR_SET_PDEATHSIG = 1
WATCH_EVERY_S = 0.2


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, ..., starttime at
    index 19]; None when the process is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()


def _is_dvc(pid: int) -> bool:
    """`dvc ...` (a console script: argv[0] or argv[1] ends in /dvc) or `python -m dvc`."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]
    except OSError:
        return False
    return any(Path(a.decode(errors="replace")).name == "dvc" for a in argv)


def dvc_ancestor(max_depth: int = 8) -> int | None:
    """PID of the nearest ancestor that is the `dvc` process, or None."""
    pid = os.getppid()
    for _ in range(max_depth):
        if pid <= 1:
            return None
        if _is_dvc(pid):
            return pid
        stat = _proc_stat(pid)
        if stat is None:
            return None
        pid = int(stat[1])
    return None


def _watch(pid: int, sig: int) -> None:
    """Signal this process once ``pid`` has exited (gone, a zombie, or its PID reused)."""
    stat = _proc_stat(pid)
    start = stat[19] if stat else None
    def loop() -> None:
        while True:
            now = _proc_stat(pid)
            if now is None or now[0] in "ZX" or now[19] != start:
                os.kill(os.getpid(), sig)
                return
            time.sleep(WATCH_EVERY_S)
    threading.Thread(target=loop, name=f"watch-dvc-{pid}", daemon=True).start()


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
    launcher = dvc_ancestor() if "DVC_STAGE" in os.environ else None
    if launcher is not None and launcher != parent:
        _watch(launcher, sig)
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

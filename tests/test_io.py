"""Atomic writes leave nothing behind: a writer killed mid-write leaves a temporary that
the next writer of the same target removes; a live writer's temporary is left alone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from conftest import REPO, stage_env
from nlrepro.io import atomic_dir, sweep_stale_temps, write_json

KILLED_WRITER = """
import os, sys, time
sys.path.insert(0, "src")
from pathlib import Path
from nlrepro.io import atomic_dir
with atomic_dir(Path(sys.argv[1]) / "figures") as tmp:
    (tmp / "a.png").write_bytes(b"half")
    print(tmp, flush=True)
    time.sleep(60)
"""


def test_a_killed_writers_temporary_is_swept_by_the_next_write(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env=stage_env())
    tmp = proc.stdout.readline().strip()
    assert os.path.isdir(tmp) and os.path.basename(tmp).startswith(f".figures.{proc.pid}.")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.isdir(tmp)                                  # kill -9: left behind
    with atomic_dir(tmp_path / "figures") as new:
        (new / "a.png").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]
    assert (tmp_path / "figures/a.png").read_bytes() == b"whole"


def test_only_dead_writers_temporaries_are_removed(tmp_path):
    dead = tmp_path / ".summary.json.999999999.x1.tmp"        # no such PID
    live = tmp_path / f".summary.json.{os.getpid()}.x2.tmp"   # this process: still writing
    other = tmp_path / ".summary.json.bak"                     # not a temporary
    for p in (dead, live, other):
        p.write_text("x")
    write_json(tmp_path / "summary.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other.name, "summary.json"])
    assert sweep_stale_temps(tmp_path / "summary.json") == []

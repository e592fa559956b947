"""Fault injection at smoke size: `kill -9` of the trainer, of `dvc` mid-train, of
evaluate and of report, each followed by `dvc repro`. Every recovery must end with the
uninterrupted run's results (weights byte for byte, logs and metrics equal but for
timings), no orphan process, no duplicated log line and no stray file in the tree.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import smoke_params
from test_e2e_dvc import copy_tree, dvc, sh

pytestmark = pytest.mark.e2e

RUN = "hope-s0"
TIMING = {"tokens_per_s", "step_s", "train_seconds", "first_step_seconds", "wall_time_s",
          "torch_threads", "git_commit"}


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """One variant, 24 steps: long enough to be killed mid-train."""
    root = tmp_path_factory.mktemp("faults")
    copy_tree(root)
    params = smoke_params(train={"variants": ["hope"], "steps": 24, "ckpt_every": 4,
                                 "eval_every": 8, "log_every": 1})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    sh(root, "git", "init", "-q")
    sh(root, *git, "add", "-A")
    sh(root, *git, "commit", "-qm", "smoke")
    dvc(root, "repro")
    sh(root, *git, "add", "-A")
    sh(root, *git, "commit", "-qm", "uninterrupted run")
    return root


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def results(root: Path) -> dict:
    """Everything a run produced, timings left out."""
    log = [_strip(json.loads(l)) for l in
           (root / f"metrics/train/{RUN}/log.jsonl").read_text().splitlines()]
    return {"model": (root / f"models/{RUN}.pt").read_bytes(),
            "log": log,
            "train": _strip(json.loads((root / f"metrics/train/{RUN}/metrics.json").read_text())),
            "eval": _strip(json.loads((root / f"metrics/eval/{RUN}.json").read_text())),
            "summary": _strip(json.loads((root / "metrics/summary.json").read_text()))}


@pytest.fixture(scope="module")
def baseline(clone):
    return results(clone)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def start(root: Path, stage: str) -> subprocess.Popen:
    """`dvc repro -f -s <stage>` in the background, its commands run by /bin/sh (on Debian,
    dash, which keeps a shell between dvc and the stage: the case CI has)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro", "-f", "-s", stage],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**env, "SHELL": "/bin/sh"})


def wait_for(cond, what: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_training(root: Path) -> subprocess.Popen:
    """A forced rerun of the train stage; the finished run's log (kept beside its
    checkpoints) is removed first so that progress is read from the new trainer only."""
    for log in (root / "checkpoints").glob(f"{RUN}-*/log.jsonl"):
        log.unlink()
    return start(root, "train@hope-0")


def trainer_at(root: Path, step: int):
    def reached() -> bool:
        for log in (root / "checkpoints").glob(f"{RUN}-*/log.jsonl"):
            if sum(1 for l in log.read_text().splitlines() if '"train"' in l) >= step:
                return True
        return False
    return reached


def stage_child(proc: subprocess.Popen) -> int:
    """The stage's Python process: dvc's child, or the child of the shell dvc started."""
    wait_for(lambda: children(proc.pid), "the stage process")
    pid = children(proc.pid)[0]
    while Path(f"/proc/{pid}/comm").read_text().strip() in {"sh", "dash", "bash"}:
        wait_for(lambda: children(pid), "the stage process under its shell")
        pid = children(pid)[0]
    return pid


def recover_and_compare(root: Path, baseline: dict) -> str:
    out = dvc(root, "repro").stdout
    assert results(root) == baseline
    log = (root / f"metrics/train/{RUN}/log.jsonl").read_text().splitlines()
    keys = [(json.loads(l)["kind"], json.loads(l)["step"]) for l in log]
    assert len(keys) == len(set(keys)) and keys == sorted(keys, key=lambda k: (k[1], k[0] != "train"))
    untracked = sh(root, "git", "status", "--porcelain").stdout.splitlines()
    assert [l for l in untracked if l.startswith("??")] == [], untracked
    return out


def test_kill_9_of_the_trainer_then_repro_resumes_to_identical_results(clone, baseline):
    proc = start_training(clone)
    trainer = stage_child(proc)
    wait_for(trainer_at(clone, 10), "step 10")
    os.kill(trainer, signal.SIGKILL)
    assert proc.wait(timeout=60) != 0
    ckpt_dir = next((clone / "checkpoints").glob(f"{RUN}-*"))
    # killed mid-run: a checkpoint is left (last.prev.pt alone if the kill fell between
    # save_resumable's rotation and its write; resume falls back to it)
    assert {"last.pt", "last.prev.pt"} & {p.name for p in ckpt_dir.iterdir()}
    out = recover_and_compare(clone, baseline)
    assert "Running stage 'train@hope-0'" in out
    assert not (ckpt_dir / "last.pt").exists()            # finished: removed


def test_kill_9_of_dvc_mid_train_leaves_no_orphan_and_no_duplicate(clone, baseline):
    proc = start_training(clone)
    trainer = stage_child(proc)
    wait_for(trainer_at(clone, 10), "step 10")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not alive(trainer), "the orphaned trainer to exit", timeout=20)
    # It stopped when dvc died, not by finishing: no final weights written outside DVC,
    # and the checkpoint it would have deleted on finishing is still there.
    assert not (clone / f"models/{RUN}.pt").exists()
    assert list((clone / "checkpoints").glob(f"{RUN}-*/last.pt")) or \
        list((clone / "checkpoints").glob(f"{RUN}-*/last.prev.pt"))  # killed mid-rotation
    recover_and_compare(clone, baseline)


def test_kill_9_of_evaluate_then_repro(clone, baseline):
    proc = start(clone, "evaluate@hope-0")
    child = stage_child(proc)
    time.sleep(1.0)                                   # inside the evaluation
    os.kill(child, signal.SIGKILL)
    assert proc.wait(timeout=60) != 0
    recover_and_compare(clone, baseline)


def test_kill_9_of_report_then_repro_leaves_no_temporaries(clone, baseline):
    proc = start(clone, "report")
    child = stage_child(proc)
    wait_for(lambda: list((clone / "plots").glob(".*.tmp")) or proc.poll() is not None,
             "the report's temporaries")
    os.kill(child, signal.SIGKILL)
    proc.wait(timeout=60)
    recover_and_compare(clone, baseline)
    assert not list(clone.rglob(".*.tmp"))

"""Training guardrails: checkpoints verified on load with a fallback to the previous one,
one writer per run directory, and no trainer outliving its parent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import stage_env
from nlrepro.errors import NLReproError
from nlrepro.train import checkpoint as ckpt
from nlrepro.train.guardrails import RunLock
from test_train import _params, _trainer


def test_a_truncated_checkpoint_falls_back_to_the_previous_and_ends_identical(tmp_path):
    full = _trainer(tmp_path / "a", "hope")
    full.run()
    killed = _trainer(tmp_path / "b", "hope", ckpt_every=2)
    killed.run(until=5)                                     # checkpoints at steps 2 and 4
    last = tmp_path / "b" / "last.pt"
    assert ckpt.verify(last) is None and ckpt.verify(ckpt.previous_path(last)) is None
    blob = last.read_bytes()
    last.write_bytes(blob[: len(blob) // 2])                # a crash mid-write, or a bad disk
    said = []
    source = ckpt.pick_resumable(last, said.append)
    assert source == ckpt.previous_path(last)
    assert said == [f"{last}: {len(blob) // 2} bytes, {len(blob)} written (truncated?); "
                    f"resuming from the previous checkpoint {source}"]
    resumed = _trainer(tmp_path / "b", "hope", ckpt_every=2)
    torch.manual_seed(99)
    assert resumed.resume(source) and resumed.step == 2
    resumed.run()
    a, b = _params(full), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_intact_checkpoint_starts_over_and_says_so(tmp_path):
    t = _trainer(tmp_path, "transformer", ckpt_every=2)
    t.run(until=5)
    last = tmp_path / "last.pt"
    for p in (last, ckpt.previous_path(last)):
        p.write_bytes(b"\0" * p.stat().st_size)             # same size, wrong content
    said = []
    assert ckpt.pick_resumable(last, said.append) is None
    assert said == [f"{last}: content does not match its SHA-256 (corrupt), and no intact "
                    "previous checkpoint; starting the run over"]
    assert ckpt.pick_resumable(tmp_path / "none.pt", said.append) is None    # fresh run
    ckpt.remove_resumable(last)
    assert not list(tmp_path.glob("last*"))


HOLD = ("import sys, time; sys.path.insert(0, 'src'); from nlrepro.train.guardrails import "
        "RunLock; from pathlib import Path\nwith RunLock(Path(sys.argv[1]), 'r'):\n"
        "    print('held', flush=True); time.sleep(60)")


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path):
    from conftest import REPO
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True, env=stage_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(NLReproError) as exc:
            with RunLock(tmp_path, "hope-s0"):
                pass
        assert str(exc.value) == (f"train hope-s0: another trainer (PID {holder.pid}) is "
                                  f"writing {tmp_path}; wait for it to finish or kill it, "
                                  "then rerun")
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path, "hope-s0"):                       # the kernel dropped the lock
        assert (tmp_path / "lock").read_text().strip() == str(os.getpid())


ORPHAN = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import sys, time
sys.path.insert(0, "src")
from nlrepro.train.guardrails import die_with_parent
die_with_parent()
print("armed", flush=True)
time.sleep(60)
'''], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "armed"
print(child.pid, flush=True)
time.sleep(60)
"""


def _gone(pid: int, within_s: float = 5.0) -> bool:
    """True once ``pid`` has exited (a zombie reaped by nobody counts as gone)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_a_trainer_dies_with_its_parent_even_after_kill_9(tmp_path):
    from conftest import REPO
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env=stage_env())
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # a zombie reaped by init also counts as gone
        with open(f"/proc/{child}/stat") as f:
            if f.read().split()[2] == "Z":
                break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its parent by 5 s")


# A stand-in for `dvc` (its argv[0] is a file named dvc) that runs the stage through a shell
# which does not exec its command (`; true` keeps it waiting, as dash does with any command).
FAKE_DVC = """#!{python}
import os, subprocess, sys, time
shell = subprocess.Popen(["/bin/sh", "-c", sys.argv[1] + "; true"], env=os.environ)
time.sleep(60)
"""
TRAINER = ("{python} -c 'import os, sys, time; sys.path.insert(0, \"src\"); "
           "from nlrepro.train.guardrails import die_with_parent; die_with_parent(); "
           "open(sys.argv[1], \"w\").write(str(os.getpid())); time.sleep(60)' {pidfile}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux-only")
def test_a_trainer_behind_a_shell_dies_when_dvc_is_killed(tmp_path):
    from conftest import REPO
    dvc = tmp_path / "dvc"
    dvc.write_text(FAKE_DVC.format(python=sys.executable))
    dvc.chmod(0o755)
    pidfile = tmp_path / "trainer.pid"
    launcher = subprocess.Popen([str(dvc), TRAINER.format(python=sys.executable,
                                                            pidfile=pidfile)],
                                cwd=REPO, env={**stage_env(), "DVC_STAGE": "train@hope-0"})
    end = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < end:
        time.sleep(0.05)
    trainer = int(pidfile.read_text())
    with open(f"/proc/{trainer}/stat") as f:           # the shell is between dvc and it
        shell = int(f.read().rsplit(")", 1)[1].split()[1])
    assert shell != launcher.pid
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    try:
        assert _gone(trainer), "the trainer outlived dvc by 5 s"
    finally:
        for pid in (trainer, shell):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _sharded_trainer(tmp_path, **kw):
    """A trainer that checkpoints as an FSDP run does (a directory of DCP shards); one
    process without FSDP writes the same layout, with a single shard file."""
    t = _trainer(tmp_path, "hope", **kw)
    t.state.fsdp = True
    t.spec.ckpt_path = tmp_path / "last.dcp"
    return t


def test_a_damaged_sharded_checkpoint_falls_back_to_the_previous_and_ends_identical(tmp_path):
    full = _trainer(tmp_path / "a", "hope")
    full.run()
    killed = _sharded_trainer(tmp_path / "b", ckpt_every=2)
    killed.run(until=5)                                     # shards at steps 2 and 4
    last = tmp_path / "b" / "last.dcp"
    prev = ckpt.previous_path(last)
    assert prev.name == "last.prev.dcp" and (last / "extra.pt").exists()
    assert ckpt.verify(last) is None and ckpt.verify(prev) is None
    assert not (tmp_path / "b" / ".last.dcp.tmp").exists()
    shard = next(last.glob("*.distcp"))
    blob = shard.read_bytes()
    shard.write_bytes(blob[:100])
    said = []
    assert ckpt.pick_resumable(last, said.append) == prev
    assert said == [f"{last}: shard {shard.name}: 100 bytes, {len(blob)} written (truncated?); "
                    f"resuming from the previous checkpoint {prev}"]
    (last / "stray").write_text("x")
    assert ckpt.verify(last).startswith("shard")
    resumed = _sharded_trainer(tmp_path / "b", ckpt_every=2)
    torch.manual_seed(99)
    assert resumed.resume(prev) and resumed.step == 2
    resumed.run()
    a, b = _params(full), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt.remove_resumable(last)
    assert not list((tmp_path / "b").glob("*.dcp*"))


def test_a_sharded_checkpoint_needs_fsdp_and_is_not_an_evaluation_file(tmp_path):
    t = _sharded_trainer(tmp_path, ckpt_every=2)
    t.run(until=2)
    plain = _trainer(tmp_path / "p", "hope")
    with pytest.raises(NLReproError, match="a sharded \\(FSDP\\) checkpoint; resume it with train.fsdp"):
        plain.resume(tmp_path / "last.dcp")
    with pytest.raises(NLReproError, match="evaluation reads the final weights"):
        ckpt.model_from_checkpoint(tmp_path / "last.dcp")

"""2-rank DDP (gloo, through torchrun) equals one process at the same global batch."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, stage_env

STEPS = 4


def _torchrun(out, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "ddp_worker.py"), str(out), str(STEPS), *extra]
    result = subprocess.run(cmd, env=stage_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    result = subprocess.run([sys.executable, str(REPO / "tests" / "ddp_worker.py"), str(out),
                             str(STEPS)], env=stage_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "rank0.json").read_text())


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_equal_one_process_at_the_same_global_batch(tmp_path, single, mode):
    r0, r1 = _torchrun(tmp_path, *(["fsdp"] if mode == "fsdp" else []))
    assert r0["losses"][0] == pytest.approx(single["losses"][0], abs=1e-5)
    assert r0["losses"] == pytest.approx(single["losses"], rel=1e-3)
    assert r0["losses"] == r1["losses"]  # the logged loss is the mean over ranks
    for step in range(STEPS):
        a, b = set(r0["rows"][step]), set(r1["rows"][step])
        assert not a & b, "the two ranks read the same rows"
        assert sorted(a | b) == sorted(single["rows"][step])

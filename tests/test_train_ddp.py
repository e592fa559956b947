"""2-rank DDP and per-block FSDP2 (gloo, through torchrun) equal one process at the same
global batch; a 2-rank FSDP2 run resumes exactly from its sharded (DCP) checkpoint."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, stage_env

STEPS = 4


def _torchrun(out, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "ddp_worker.py"), str(out), str(STEPS), *map(str, extra)]
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


def test_fsdp_shards_each_block_separately():
    code = ("import torch, torch.distributed as dist, os\n"
            "from nlrepro.model.lm import build_model\n"
            "from nlrepro.model.presets import preset_config\n"
            "from nlrepro.train import distributed as D\n"
            "from torch.distributed.fsdp import FSDPModule\n"
            "from torch.distributed.tensor import DTensor\n"
            "info = D.init('cpu', 'gloo')\n"
            "model = build_model(preset_config('tiny', 'hope', d_model=32, n_heads=2, n_layers=2,"
            " mlp_width=64), 64)\n"
            "D.wrap(model, info, True)\n"
            "assert isinstance(model, FSDPModule)\n"
            "assert all(isinstance(b, FSDPModule) for b in model.blocks)\n"
            "assert all(isinstance(p, DTensor) for p in model.parameters())\n"
            "D.shutdown()\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--no-python", sys.executable, "-c", code]
    result = subprocess.run(cmd, env=stage_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_fsdp_resumes_exactly_from_its_sharded_checkpoint(tmp_path):
    full = _torchrun(tmp_path / "full", "fsdp")
    first = _torchrun(tmp_path / "part", "fsdp", "--until", 2)
    ckpt = tmp_path / "part" / "last.dcp"
    assert ckpt.is_dir() and (tmp_path / "part" / "last.dcp.sha256").exists()
    assert len(list(ckpt.glob("*.distcp"))) == 2            # one shard file per rank
    rest = _torchrun(tmp_path / "rest", "fsdp", "--resume", ckpt)
    for rank in (0, 1):
        assert first[rank]["losses"] + rest[rank]["losses"] == full[rank]["losses"]
        assert rest[rank]["weights"] == full[rank]["weights"]
        assert rest[rank]["rows"] == full[rank]["rows"][2:]

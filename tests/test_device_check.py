"""The device check (scripts/device_check.sh) at tiny size on CPU, so the script that a
GPU machine runs keeps working: every variant trains, one task is scored, and the
2-rank FSDP2 run resumes exactly from its sharded checkpoint."""
import json
import subprocess

from conftest import REPO, stage_env


def test_device_check_runs_at_tiny_size_on_cpu(tmp_path):
    cmd = ["bash", str(REPO / "scripts/device_check.sh"), "--steps", "2", "--seq", "64",
           "--batch", "2", "--out", str(tmp_path)]
    result = subprocess.run(cmd, env=stage_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    out = json.loads((tmp_path / "device_check.json").read_text())
    assert out["failed"] == [] and out["settings"]["preset"] == "tiny"
    rows = {r["variant"]: r for r in out["throughput"]}
    assert set(rows) == {"transformer", "titan", "hope"}
    for r in rows.values():
        assert r["finite"] and r["tokens_per_s"] > 0 and r["flops_per_token"] > 0
        assert r["peak_kind"] == "fp32 matmul" and 0 < r["mfu"]
    # Equal parameters (the presets balance the variants within 10%), more FLOPs for hope.
    assert abs(rows["hope"]["params"] / rows["transformer"]["params"] - 1) < 0.1
    assert rows["hope"]["flops_per_token"] > rows["transformer"]["flops_per_token"]
    assert rows["hope"]["eval"]["examples"] == 2
    fsdp = out["fsdp"]
    assert fsdp["ok"] and fsdp["ranks"] == 2 and fsdp["weights_equal"]
    assert fsdp["losses_resumed"] == fsdp["losses_full"]
    assert {"__0_0.distcp", "__1_0.distcp", "extra.pt"} <= set(fsdp["shard_files"])
    assert "| hope |" in result.stdout and "time per token vs Transformer++" in result.stdout


def test_device_peaks_are_keyed_by_the_most_specific_name():
    import sys
    sys.path.insert(0, str(REPO / "scripts"))
    from device_check import peak_bf16
    assert peak_bf16("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16("NVIDIA H200") == 989e12
    assert peak_bf16("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16("Some Unknown GPU") is None

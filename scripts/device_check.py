"""Device check: what the GPU/cluster paths do on the machine at hand, in one run.

1. **Throughput** of each variant (a full training step: forward, loss, backward, AdamW;
   each variant in its own process): tokens/s, peak memory, model FLOPs per token
   (``torch.utils.flop_counter`` over one forward + backward, the in-context updates'
   analytic gradients included) and MFU = FLOPs/token x tokens/s / peak, where the peak
   is the device's dense bf16 rate from ``PEAK_BF16`` (keyed by the CUDA device name) or,
   on CPU, the float32 matmul rate measured in the same process.
2. **Evaluation**: the zero-shot scorer of the evaluate stage (``ModelScorer`` +
   ``evaluate_task``) scores one task file with the last variant's model on the device.
3. **FSDP2 with a sharded checkpoint**: a 2-step run through the training loop under
   ``torchrun`` (per-block FSDP2; 2 ranks on CPU with gloo, ``min(2, GPUs)`` ranks on CUDA
   with NCCL), saved after step 1 through ``torch.distributed.checkpoint`` and resumed in
   a new launch; the resumed losses and weights must equal the uninterrupted run's
   (exactly on CPU; on CUDA within ``--cuda-rtol``, as some GPU kernels are not
   bit-deterministic).

On a CUDA machine it runs the ``340m`` preset in bf16; on CPU the ``tiny`` preset in
float32 with a small batch, which is what CI runs (tests/test_device_check.py) so the
script keeps working. Exit 0 when every check ran and the resume matched; MFU targets
(Transformer++ >= 40%, HOPE >= 20% on an H200) are printed, not enforced.

    bash scripts/device_check.sh [--preset 340m] [--steps 20] [--out DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from nlrepro.model.lm import build_model  # noqa: E402
from nlrepro.model.presets import preset_config  # noqa: E402
from bench_model import matmul_flops  # noqa: E402  (the CPU's reference peak, as the bench measures it)

VARIANTS = ("transformer", "titan", "hope")
# Dense bf16 tensor-core peak FLOP/s by device name (most specific first), from the
# vendors' data sheets (SXM parts unless named).
PEAK_BF16 = [
    ("GH200", 989e12), ("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12),
    ("H100", 989e12), ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12),
    ("A10", 125e12), ("L4", 121e12), ("RTX 4090", 165e12), ("V100", 125e12),
]
TARGET_MFU = {"transformer": 0.40, "hope": 0.20}


def peak_bf16(name: str) -> float | None:
    for key, flops in PEAK_BF16:
        if key in name:
            return flops
    return None


def settings(device: torch.device, args) -> dict:
    cuda = device.type == "cuda"
    return {"preset": args.preset or ("340m" if cuda else "tiny"),
            "vocab": args.vocab or (32000 if cuda else 4096),
            "seq": args.seq or (1024 if cuda else 128), "batch": args.batch or (8 if cuda else 4),
            "steps": args.steps or (20 if cuda else 3), "bf16": cuda}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(variant: str, s: dict, device: torch.device) -> dict:
    """Tokens/s, peak memory and FLOPs per token of one variant's training step."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build_model(preset_config(s["preset"], variant), s["vocab"]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, s["vocab"], (s["batch"], s["seq"] + 1), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s["bf16"])

    def step() -> float:
        with autocast:
            logits = model(tokens[:, :-1]).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    with FlopCounterMode(display=False) as counter, autocast:
        logits = model(tokens[:, :-1]).logits
        F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()).backward()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup = max(1, s["steps"] // 4)
    times, losses = [], []
    for i in range(s["steps"]):
        _sync(device)
        start = time.perf_counter()
        losses.append(step())
        _sync(device)
        if i >= warmup or s["steps"] == 1:
            times.append(time.perf_counter() - start)
    step_time = float(np.median(times))
    tokens_per_step = s["batch"] * s["seq"]
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device) / 2 ** 30
        name = torch.cuda.get_device_name(device)
        peak, peak_kind = peak_bf16(name), "bf16 peak"
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        name, peak, peak_kind = "cpu", matmul_flops(1024), "fp32 matmul"
    flops = counter.get_total_flops() / tokens_per_step
    tps = tokens_per_step / step_time
    return {"variant": variant, "device": name, "params": sum(p.numel() for p in model.parameters()),
            "tokens_per_s": tps, "step_s": step_time, "peak_mem_gib": peak_mem,
            "flops_per_token": flops, "peak_flops": peak, "peak_kind": peak_kind,
            "mfu": flops * tps / peak if peak else None, "finite": all(np.isfinite(losses)),
            "model": model if variant == VARIANTS[-1] else None}


def evaluate_one_task(model, s: dict, device: torch.device, task_file: Path) -> dict:
    """Score one zero-shot task with the evaluate stage's scorer on the device."""
    from nlrepro.data.shakespeare import iter_documents
    from nlrepro.data.tokenizer import train_tokenizer
    from nlrepro.eval.metrics import evaluate_task
    from nlrepro.eval.scorer import ModelScorer
    from nlrepro.eval.tasks import load_task

    texts = [text for _, text in iter_documents(limit=20)]
    tokenizer = train_tokenizer(texts, vocab_size=min(1024, s["vocab"]), min_frequency=2)
    model.eval()
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s["bf16"]):
        scorer = ModelScorer(model, tokenizer, teach_scale=1.0, max_len=s["seq"])
        result = evaluate_task(load_task("piqa", task_file), scorer.loglikelihood)
    return {"task": "piqa", "file": str(task_file), "examples": len(result.records),
            "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, float)},
            "seconds": time.perf_counter() - start}


# --- FSDP2 + DCP: a worker under torchrun --------------------------------------------------

def fsdp_worker(out: Path, phase: str, s: dict) -> None:
    """One rank of a 2-step FSDP2 run through the Trainer: ``full`` runs both steps,
    ``part`` runs step 1 and saves the sharded checkpoint, ``rest`` resumes and runs step 2."""
    from nlrepro.model.config import InContextConfig
    from nlrepro.train import distributed as D
    from nlrepro.train.checkpoint import DataIdentity, RunConfig
    from nlrepro.train.config import TeachConfig, TrainConfig
    from nlrepro.train.loop import RunSpec, Trainer

    info = D.init("auto", "auto")
    torch.manual_seed(0)
    variant = "hope"
    model_cfg = preset_config(s["preset"], variant)
    guards = InContextConfig(residual_clip=4.0, inner_clip=4.0, teach_clip=1.0)
    model = build_model(model_cfg, s["vocab"], guards).to(info.device)
    rows = np.random.default_rng(0).integers(0, s["vocab"], size=(4 * s["batch"], s["seq"] + 1))
    cfg = TrainConfig(steps=2, batch_size=-(-s["batch"] // info.world) * info.world,
                      lr=1.0e-3, warmup_steps=0, eval_every=10 ** 6, ckpt_every=10 ** 6,
                      nproc=info.world, fsdp=True, dtype="bfloat16" if s["bf16"] else "float32")
    run = RunConfig(variant=variant, seed=0, model=model_cfg, in_context=guards, teach_scale=1.0,
                    teach=TeachConfig(warmup_steps=0, decay_start=None), grad_clip=1.0,
                    train=cfg, data=DataIdentity("0" * 64, s["vocab"], s["seq"] + 1, len(rows)))
    ckpt = out / "last.dcp"
    spec = RunSpec(run=run, out_dir=out / phase, ckpt_path=ckpt, final_path=out / "final.pt")
    trainer = Trainer(spec, model, rows.astype(np.uint16), rows[:2].astype(np.uint16), info,
                      D.wrap(model, info, fsdp=True))
    if phase == "rest":
        assert trainer.resume(ckpt), f"{ckpt}: no checkpoint to resume"
    losses = []
    while trainer.step < (1 if phase == "part" else 2):
        losses.append(trainer.train_step()["loss"])
    if phase == "part":
        start = time.perf_counter()
        trainer.save(ckpt)
        save_s = time.perf_counter() - start
    weights, _ = D.full_state(model, None, fsdp=True)
    digest = hashlib.sha256(b"".join(weights[k].float().cpu().numpy().tobytes()
                                     for k in sorted(weights))).hexdigest()
    if info.is_main:
        (out / f"{phase}.json").write_text(json.dumps(
            {"losses": losses, "weights": digest, "world": info.world,
             "weights_vec": [float(v.float().norm()) for _, v in sorted(weights.items())],
             **({"save_s": save_s} if phase == "part" else {})}))
    D.shutdown()


def fsdp_resume_check(s: dict, device: torch.device, out: Path, rtol: float) -> dict:
    nproc = 2 if device.type == "cpu" else max(1, min(2, torch.cuda.device_count()))
    for phase in ("full", "part", "rest"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", __file__, "--fsdp-worker", str(out), phase,
               "--preset", s["preset"], "--vocab", str(s["vocab"]), "--seq", str(s["seq"]),
               "--batch", str(s["batch"])]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-5:]
            return {"ok": False, "ranks": nproc, "error": f"phase {phase} failed: " + " | ".join(tail)}
    full, part, rest = (json.loads((out / f"{p}.json").read_text()) for p in ("full", "part", "rest"))
    resumed = part["losses"] + rest["losses"]
    if device.type == "cpu":
        ok = resumed == full["losses"] and rest["weights"] == full["weights"]
    else:
        ok = bool(np.allclose(resumed, full["losses"], rtol=rtol)
                  and np.allclose(rest["weights_vec"], full["weights_vec"], rtol=rtol))
    return {"ok": ok, "ranks": nproc, "losses_full": full["losses"], "losses_resumed": resumed,
            "weights_equal": rest["weights"] == full["weights"], "save_s": part["save_s"],
            "shard_files": sorted(p.name for p in (out / "last.dcp").iterdir())}


# --- main ----------------------------------------------------------------------------------

def _fmt(r: dict) -> str:
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
    target = TARGET_MFU.get(r["variant"])
    goal = f" (target >= {target:.0%} on an H200)" if target and r["peak_kind"] == "bf16 peak" else ""
    return (f"| {r['variant']} | {r['params'] / 1e6:.1f}M | {r['tokens_per_s']:,.0f} | "
            f"{r['peak_mem_gib']:.2f} | {r['flops_per_token'] / 1e9:.3f} | {mfu}{goal} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset")
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--task-file", type=Path, default=REPO / "tests/data/tasks/piqa_smoke.jsonl")
    ap.add_argument("--cuda-rtol", type=float, default=1e-2)
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--fsdp-worker", nargs=2, metavar=("OUT", "PHASE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    s = settings(device, args)
    if args.fsdp_worker:
        fsdp_worker(Path(args.fsdp_worker[0]), args.fsdp_worker[1], s)
        return 0
    if args.one:
        r = throughput(args.one, s, device)
        model = r.pop("model")
        if model is not None:
            r["eval"] = evaluate_one_task(model, s, device, args.task_file)
        print(json.dumps(r))
        return 0

    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'CPU'}; "
          f"preset {s['preset']}, {'bf16 autocast' if s['bf16'] else 'float32'}, batch {s['batch']} x "
          f"seq {s['seq']}, vocab {s['vocab']}, {s['steps']} steps (median after warmup)")
    rows, failed = [], []
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--one", variant, *sys.argv[1:]]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            failed.append(f"{variant}: {result.stderr.strip().splitlines()[-1]}")
            continue
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print("\n| variant | params | tokens/s | peak memory (GiB) | GFLOP/token | MFU |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(_fmt(r))
    if rows:
        base = rows[0]["tokens_per_s"]
        print("\ntime per token vs Transformer++: " + ", ".join(
            f"{r['variant']} {base / r['tokens_per_s']:.2f}x" for r in rows))
        print(f"MFU peak: {rows[0]['peak_kind']} ({(rows[0]['peak_flops'] or 0) / 1e12:.2f} TFLOP/s)")
    evaluation = rows[-1].get("eval") if rows else None
    if evaluation:
        print(f"\nevaluate: {evaluation['task']} ({evaluation['examples']} examples) scored in "
              f"{evaluation['seconds']:.1f}s: " + ", ".join(f"{k} {v:.3f}" for k, v in evaluation["metrics"].items()))
    with tempfile.TemporaryDirectory() as tmp:
        fsdp = fsdp_resume_check(s, device, Path(tmp), args.cuda_rtol)
    if fsdp["ok"]:
        print(f"\nfsdp2 + dcp: {fsdp['ranks']} ranks, 2 steps; saved after step 1 in {fsdp['save_s']:.2f}s "
              f"({', '.join(fsdp['shard_files'])}); resumed losses {fsdp['losses_resumed']} "
              f"= uninterrupted {fsdp['losses_full']}; weights identical: {fsdp['weights_equal']}")
    else:
        failed.append(f"fsdp2 + dcp: {fsdp.get('error') or 'resumed run differs from the uninterrupted one'}")
    if not all(r["finite"] for r in rows):
        failed.append("a non-finite training loss")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "device_check.json").write_text(json.dumps(
            {"settings": s, "throughput": rows, "fsdp": fsdp, "failed": failed}, indent=1))
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Training-step throughput of the three variants on this machine (issue 3).

For each setting (the ``tiny`` preset at the default tokenizer size, and the issue's
d=128, 2 layers, 4 heads, vocabulary 32000) and each variant: tokens/s of a full training
step (forward, loss, backward, AdamW) at seq 256, batch 8, float32; peak resident memory
(each variant runs in its own process); model FLOPs per token (counted by
torch.utils.flop_counter over one forward + backward); achieved FLOP/s as a fraction of
the float32 matmul rate measured in the same run; time per token relative to
``transformer``. Variants of a setting have equal parameter counts (within 1.5%). Times
are the best of ``--steps`` steps and each process measures the matmul rate next to its
own run, because the 2 cores are often shared with other work.

With ``--compile`` each model runs as ``torch.compile(model, dynamic=False)`` (CPU
inductor); the first compiled step's time is reported as compile time, apart from the
steady-state step time.

    PYTHONPATH=src python benchmarks/bench_model.py [--steps 8] [--compile]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nlrepro.model.lm import build_model
from nlrepro.model.presets import preset_config

SETTINGS = {
    "tiny": {"overrides": {}, "vocab": 4096},
    "d128-L2": {"overrides": {"n_layers": 2}, "vocab": 32000},
}
VARIANTS = ("transformer", "titan", "hope")
# (setting, variant), what, limit: time per token relative to transformer, or the achieved
# fraction of the matmul FLOP/s.
TARGETS = [(("tiny", "hope"), "time", 2.0), (("tiny", "titan"), "time", 1.5),
           (("d128-L2", "hope"), "time", 1.5), (("d128-L2", "transformer"), "peak", 0.40)]
SEQ, BATCH = 256, 8


def matmul_flops(n: int = 2048, reps: int = 10) -> float:
    """Best float32 FLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def train_step(model, optimizer, tokens) -> None:
    logits = model(tokens[:, :-1]).logits
    loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_one(setting: str, variant: str, steps: int, compile: bool = False) -> dict:
    torch.manual_seed(0)
    spec = SETTINGS[setting]
    model = build_model(preset_config("tiny", variant, **spec["overrides"]), spec["vocab"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, spec["vocab"], (BATCH, SEQ + 1))
    with FlopCounterMode(display=False) as counter:
        logits = model(tokens[:, :-1]).logits
        F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    optimizer.zero_grad(set_to_none=True)
    compile_s = 0.0
    if compile:
        model = torch.compile(model, dynamic=False)
        start = time.perf_counter()
        train_step(model, optimizer, tokens)          # compiles forward and backward
        compile_s = time.perf_counter() - start
    train_step(model, optimizer, tokens)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        train_step(model, optimizer, tokens)
        times.append(time.perf_counter() - start)
    step_time = min(times)
    return {
        "matmul_flops": matmul_flops(),
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": BATCH * SEQ / step_time,
        "flops_per_token": counter.get_total_flops() / (BATCH * SEQ),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "compile_s": compile_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="torch.compile(model, dynamic=False)")
    parser.add_argument("--one", nargs=2, metavar=("SETTING", "VARIANT"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.steps, args.compile)))
        return
    peak = matmul_flops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"float32 matmul (2048^3): {peak / 1e9:.1f} GFLOP/s")
    print(f"seq {SEQ}, batch {BATCH}, float32, AdamW; best of {args.steps} steps; "
          f"'of matmul' = achieved FLOP/s / matmul FLOP/s measured in the same process"
          + ("; torch.compile(model, dynamic=False), 'compile s' = first step" if args.compile else ""))
    header = f"{'setting':9} {'variant':12} {'params':>10} {'tok/s':>8} {'peak MB':>8} " \
             f"{'MFLOP/tok':>10} {'matmul GF/s':>11} {'of matmul':>9} {'time/tok vs tr':>14}" \
             + (f" {'compile s':>9}" if args.compile else "")
    print(header)
    results = {}
    for setting in SETTINGS:
        base = None
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--one", setting, variant, "--steps", str(args.steps)]
            out = subprocess.run(cmd + (["--compile"] if args.compile else []),
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout)
            base = base or r["tokens_per_s"]
            frac = r["flops_per_token"] * r["tokens_per_s"] / r["matmul_flops"]
            print(f"{setting:9} {variant:12} {r['params'] / 1e6:9.2f}M {r['tokens_per_s']:8.0f} "
                  f"{r['peak_rss_mb']:8.0f} {r['flops_per_token'] / 1e6:10.1f} {r['matmul_flops'] / 1e9:11.1f} {frac:9.1%} "
                  f"{base / r['tokens_per_s']:13.2f}x" + (f" {r['compile_s']:9.1f}" if args.compile else ""))
            results[setting, variant] = {**r, "of_matmul": frac, "vs_transformer": base / r["tokens_per_s"]}
    print("\ntargets (issue 14):")
    for (setting, variant), kind, limit in TARGETS:
        r = results[setting, variant]
        if kind == "time":
            flops = r["flops_per_token"] / results[setting, "transformer"]["flops_per_token"]
            print(f"  {variant} at {setting}: time per token {r['vs_transformer']:.2f}x Transformer++ "
                  f"(target <= {limit:.1f}x: {'met' if r['vs_transformer'] <= limit else 'missed'}); "
                  f"FLOPs per token {flops:.2f}x")
        else:
            print(f"  {variant} at {setting}: {r['of_matmul']:.1%} of the matmul FLOP/s "
                  f"(target >= {limit:.0%}: {'met' if r['of_matmul'] >= limit else 'missed'})")


if __name__ == "__main__":
    main()

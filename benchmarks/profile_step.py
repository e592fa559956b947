"""Where a training step's time goes (issue 3): forward / backward / optimizer, and the
forward split by component.

Same step as ``bench_model.py`` (seq 256, batch 8, float32, AdamW, random tokens). The
component functions are wrapped with wall-clock timers from here (the model code carries
no instrumentation); a component's time is exclusive (its own time minus the wrapped
components it calls), so the rows add up to the forward. Backward is one autograd call
and is not split by component (``--ops`` lists its heaviest aten ops instead). Each
number is the median over ``--steps`` steps after one warm-up step.

    PYTHONPATH=src python benchmarks/profile_step.py [--variant hope] [--setting tiny] [--steps 5] [--ops]
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from nlrepro.model import attention, cms, combine, layers, lm, memory, self_modifying
from nlrepro.model.presets import preset_config

SETTINGS = {"tiny": ({}, 4096), "d128-L2": ({"n_layers": 2}, 32000)}
SEQ, BATCH = 256, 8

# (label, namespace, attribute): what to time. A function is patched in every namespace
# that calls it by name, a method on its class.
TARGETS = [
    ("attention", attention.CausalAttention, "forward"),
    ("mixer other (gate, norms, W_o)", combine.MemoryAsGate, "forward"),
    ("mixer other (gate, norms, W_o)", combine.AttentionMixer, "forward"),
    ("titan memory other (proj, conv, gates)", memory.NeuralMemory, "forward"),
    ("selfmod other (proj, conv, gates)", self_modifying.SelfModifyingMemory, "forward"),
    ("memory read+key  mlp_forward", memory, "mlp_forward"),
    ("memory read+key  mlp_forward", self_modifying, "mlp_forward"),
    ("memory write  lmm_write (rest)", memory, "lmm_write"),
    ("memory write  lmm_write (rest)", self_modifying, "lmm_write"),
    ("memory write  scan_coefficients", memory, "scan_coefficients"),
    ("memory write  weighted_grads", memory, "weighted_grads"),
    ("memory commit  lmm_commit", memory, "lmm_commit"),
    ("memory commit  lmm_commit", self_modifying, "lmm_commit"),
    ("selfmod write  delta_rule_write", self_modifying, "delta_rule_write"),
    ("cms read  ContinuumMemory.forward", cms.ContinuumMemory, "forward"),
    ("cms absorb (rest)", cms.ContinuumMemory, "absorb"),
    ("cms absorb  swiglu_inner_grad", cms, "swiglu_inner_grad"),
    ("teach signal", lm, "teach_signal"),
    ("norms (block)", layers.RMSNorm, "forward"),
    ("model other (embed, block glue, loop)", lm.NestedLM, "forward"),
    ("head + loss", lm.NestedLM, "head"),
]


class Timers:
    """Exclusive wall time per label, nesting-aware."""

    def __init__(self):
        self.total = defaultdict(float)
        self.stack = []

    def wrap(self, label, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self.stack.append(0.0)                     # time spent in wrapped callees
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.total[label] += elapsed - self.stack.pop()
                if self.stack:
                    self.stack[-1] += elapsed
        return timed


def instrument(timers: Timers) -> None:
    for label, owner, name in TARGETS:
        setattr(owner, name, timers.wrap(label, getattr(owner, name)))


def train_step(model, optimizer, tokens, timers: Timers) -> dict[str, float]:
    timers.total.clear()
    t0 = time.perf_counter()
    logits = model(tokens[:, :-1]).logits
    loss = timers.wrap("head + loss", F.cross_entropy)(logits.flatten(0, 1), tokens[:, 1:].flatten())
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2, **timers.total}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="hope")
    parser.add_argument("--setting", default="tiny", choices=SETTINGS)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--ops", action="store_true", help="also list the top aten ops (torch.profiler)")
    args = parser.parse_args()
    overrides, vocab = SETTINGS[args.setting]
    torch.manual_seed(0)
    model = lm.build_model(preset_config("tiny", args.variant, **overrides), vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, vocab, (BATCH, SEQ + 1))
    timers = Timers()
    instrument(timers)
    train_step(model, optimizer, tokens, timers)
    runs = [train_step(model, optimizer, tokens, timers) for _ in range(args.steps)]
    med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
    step = med["forward"] + med["backward"] + med["optimizer"]
    print(f"{args.variant} @ {args.setting}: step {step * 1e3:.0f} ms (median of {args.steps}), "
          f"{torch.get_num_threads()} threads\n")
    print("| part | ms | share of step |\n|---|---:|---:|")
    for k in ("forward", "backward", "optimizer"):
        print(f"| {k} | {med[k] * 1e3:.0f} | {med[k] / step:.0%} |")
    print("\n| forward component (exclusive) | ms | share of forward |\n|---|---:|---:|")
    for k in sorted((k for k in med if k not in ("forward", "backward", "optimizer")), key=lambda k: -med[k]):
        print(f"| {k} | {med[k] * 1e3:.1f} | {med[k] / med['forward']:.0%} |")
    if args.ops:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            train_step(model, optimizer, tokens, timers)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()

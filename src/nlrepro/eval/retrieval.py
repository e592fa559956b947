"""Retrieval by distance and depth: the long-context study's evaluation grid.

A probe is a passkey haystack (``nlrepro.data.retrieval.passkey_doc``) whose needle starts
exactly ``distance`` tokens before the answer position and sits at ``depth`` of the
filler (the share of filler tokens before the needle: 0 = right after the intro). The
model streams the prompt from a fresh state in ``stream_chunk`` pieces with its state
carried (attention cache bounded by the window, memory fixed-size), greedily decodes
``len(key) + 2`` tokens, and is right only on the exact key followed by a non-digit
(``eval.passkey.is_exact_retrieval``; chance 1/90000). Every cell (distance, depth) gets
``samples`` probes; accuracies carry Wilson 95% intervals, and the teacher-forced
log-likelihood of the key is recorded per probe (a smooth signal below exact retrieval).

``trace_haystack`` records, along one haystack, the memory update norms and the mean
memory-gate value per layer for every chunk (the limits section of docs/LONG_CONTEXT.md).
"""
from __future__ import annotations

import functools
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from nlrepro.data.retrieval import PASSKEY_RANGE, RetrievalDoc, passkey_doc, prefix_for  # noqa: F401
from nlrepro.eval.passkey import is_exact_retrieval
from nlrepro.eval.scorer import ModelScorer

CHANCE = 1.0 / (PASSKEY_RANGE[1] - PASSKEY_RANGE[0])
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (n > 0)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def samples_for_halfwidth(halfwidth: float, z: float = Z95) -> int:
    """Smallest n whose Wilson interval at the worst case (k = n/2) has half-width <= halfwidth."""
    if not 0 < halfwidth < 0.5:
        raise ValueError(f"halfwidth must be in (0, 0.5), got {halfwidth}")
    n = 1
    while max(wilson(k, n, z)[1] - wilson(k, n, z)[0] for k in (n // 2, (n + 1) // 2)) / 2 > halfwidth:
        n += 1
    return n


@dataclass(frozen=True)
class Probe:
    distance: int
    depth: float
    sample: int
    doc: RetrievalDoc

    @property
    def prompt(self) -> list[int]:
        return self.doc.ids[:self.doc.answer_pos]


def build_probes(encode: Callable[[str], list[int]], distances: Sequence[int],
                 depths: Sequence[float], samples: int, seed: int) -> list[Probe]:
    """Every (distance, depth, sample), each from its own seeded generator. A probe's
    prompt is the intro, the prefix filler, then exactly ``distance`` tokens; with our
    tokenizer (one token per digit) all probes of a cell have the same length."""
    encode = functools.lru_cache(maxsize=None)(encode)
    probes = []
    for distance in distances:
        for depth in depths:
            for s in range(samples):   # a probe depends on its own coordinates only
                rng = np.random.default_rng((seed, 4241, distance, int(round(depth * 10_000)), s))
                doc = passkey_doc(encode, rng, distance, depth=depth)
                probes.append(Probe(distance, depth, s, doc))
    return probes


def evaluate_probes(scorer, probes: Sequence[Probe], on_cell: Optional[Callable[[int], None]] = None
                    ) -> list[dict]:
    """One record per probe: cell, key, generated text, exact correctness, key log-likelihood."""
    cells: dict[tuple[int, float, int], list[Probe]] = defaultdict(list)
    for p in probes:   # batches hold prompts of one length (their positions align)
        cells[(p.distance, p.depth, len(p.prompt))].append(p)
    records = []
    for group in cells.values():
        for start in range(0, len(group), scorer.batch_size):
            batch = group[start:start + scorer.batch_size]
            prompts = torch.tensor([p.prompt for p in batch], dtype=torch.long)
            targets = [scorer.encode(p.doc.answer) for p in batch]
            new_tokens = max(len(p.doc.answer) for p in batch) + 1
            generated, scored = scorer.greedy_after(prompts, targets, new_tokens)
            for p, gen, (loglik, greedy) in zip(batch, generated, scored):
                text = scorer.decode(gen)
                records.append({
                    "distance": p.distance, "depth": p.depth, "sample": p.sample,
                    "length": len(p.prompt), "fact_pos": p.doc.fact_pos, "key": p.doc.answer.strip(),
                    "generated": text, "correct": is_exact_retrieval(text, p.doc.answer.strip()),
                    "loglik": loglik, "is_greedy": greedy})
        if on_cell:
            on_cell(len(group))
    return records


def _interval(records: Sequence[dict]) -> dict[str, float]:
    k, n = sum(bool(r["correct"]) for r in records), len(records)
    lo, hi = wilson(k, n)
    return {"acc": k / n, "n": n, "k": k, "lo": lo, "hi": hi}


def grid_metrics(records: Sequence[dict], window: int) -> dict[str, Any]:
    """Accuracy per cell and per distance (depths pooled) with Wilson intervals, the key
    log-likelihood per distance (mean and standard error), and the summary the study's
    target is judged on: accuracy at 4W and 16W, and the largest distance whose interval's
    lower bound is above chance."""
    if not records:
        raise ValueError("grid_metrics: no records")
    distances = sorted({r["distance"] for r in records})
    depths = sorted({r["depth"] for r in records})
    by_d = {D: [r for r in records if r["distance"] == D] for D in distances}
    cells = {str(D): {str(dp): _interval([r for r in by_d[D] if r["depth"] == dp])
                      for dp in depths if any(r["depth"] == dp for r in by_d[D])}
             for D in distances}
    loglik = {}
    for D, rs in by_d.items():
        xs = [r["loglik"] for r in rs]
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        loglik[str(D)] = {"mean": mean, "se": sd / math.sqrt(len(xs)), "n": len(xs)}
    acc = {str(D): _interval(rs) for D, rs in by_d.items()}
    above = [D for D in distances if acc[str(D)]["lo"] > CHANCE]
    return {
        "chance": CHANCE, "window": window, "n": len(records),
        "acc": _interval(records)["acc"],
        "acc_by_distance": acc,
        "acc_grid": cells,
        "key_loglik_by_distance": loglik,
        "acc_at_4w": acc.get(str(4 * window), {}).get("acc"),
        "acc_at_16w": acc.get(str(16 * window), {}).get("acc"),
        "max_distance_above_chance": max(above) if above else None,
    }


def trace_haystack(model, ids: Sequence[int], teach_scale: float, chunk: int) -> list[dict]:
    """Stream one prompt ``chunk`` tokens at a time; per chunk: its end position, the
    in-context update norms the model reports (``update_norm/*``) and the mean of every
    memory gate ``sigmoid(x W_g)`` per layer (memory variants)."""
    gates: dict[int, float] = {}
    hooks = []
    for i, block in enumerate(model.blocks):
        gate = getattr(block.mixer, "gate", None)
        if gate is not None:
            hooks.append(gate.register_forward_hook(
                lambda _m, _inp, out, i=i: gates.__setitem__(i, gates.get(i, 0.0) + float(torch.sigmoid(out).mean()))))
    rows = []
    try:
        with torch.inference_mode():
            state = model.initial_state()
            x = torch.tensor([list(ids)], dtype=torch.long, device=next(model.parameters()).device)
            for start in range(0, x.shape[1], chunk):
                gates.clear()
                out = model(x[:, start:start + chunk], state=state, teach_scale=teach_scale)
                state = out.state
                steps = max(1, -(-min(chunk, x.shape[1] - start) // (model.step_chunk or chunk)))
                rows.append({"pos": min(start + chunk, x.shape[1]),
                             **{k: float(v) for k, v in out.stats.items() if k.startswith("update_norm/")},
                             **{f"gate/layer{i}": g / steps for i, g in sorted(gates.items())}})
    finally:
        for h in hooks:
            h.remove()
    return rows


def state_bytes(state: Any) -> int:
    """Bytes held by every tensor of a model state (the streaming memory bound)."""
    seen: set[int] = set()
    total = 0

    def walk(obj: Any) -> None:
        nonlocal total
        if isinstance(obj, torch.Tensor):
            if id(obj) not in seen:
                seen.add(id(obj))
                total += obj.numel() * obj.element_size()
        elif hasattr(obj, "__dataclass_fields__"):
            for name in obj.__dataclass_fields__:
                walk(getattr(obj, name))
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
    walk(state)
    return total

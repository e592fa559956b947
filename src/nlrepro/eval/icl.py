"""In-context learning, measured: what the in-context updates are worth, and whether the
fast weights stay bounded over a long stream.

* **Loss on vs off.** Mean next-token loss over ``eval.icl.sequences`` validation
  sequences of ``eval.icl.length`` tokens with every in-context update at the evaluation's
  teach scale ("on") and with all of them frozen (teach scale 0, "off": every fast weight
  stays at its slow initial value). ``gain = off - on`` in nats/token: > 0 means the
  updates help. Also per mechanism (``memory``, ``selfmod``, ``cms<l>``), with only that
  one frozen through ``teach.levels``, and by token position in buckets.
* **Stream stability.** One stream of ``eval.icl.stream_tokens`` validation tokens at
  teach scale ``eval.icl.stream_teach_scale`` with ``clip.inner`` and ``clip.residual``
  off: the Frobenius norm of every fast weight (per layer and mechanism, summed over
  heads) relative to its start, its extremes along the stream, and whether anything went
  non-finite. The model's own guards are restored afterwards.
* **Guard binding rates** of the "on" pass (``clip_rate/*`` of ``nlrepro.model.inner``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from nlrepro.model.lm import NestedLM
from nlrepro.model.inner import UpdateStats


def mechanisms(model: NestedLM) -> list[str]:
    """The in-context mechanisms of the model, as ``teach.levels`` keys."""
    kind = model.cfg.type
    names = [] if kind == "transformer" else ["memory"]
    if kind == "hope":
        names.append("selfmod")
        names += [f"cms{i}" for i, level in enumerate(model.cfg.cms.levels) if level.chunk is not None]
    return names


@contextlib.contextmanager
def overridden(model: NestedLM, levels: Optional[dict[str, float]] = None,
               guards_off: bool = False) -> Iterator[None]:
    """Run the model with ``teach.levels`` entries replaced and/or its residual and inner
    clips off, then restore its ``InContextConfig``."""
    saved = model.in_context
    changed = saved
    if levels:
        changed = dataclasses.replace(changed, levels={**changed.levels, **levels})
    if guards_off:
        changed = dataclasses.replace(changed, inner_clip=None, residual_clip=None)
    model.in_context = changed
    try:
        yield
    finally:
        model.in_context = saved


@torch.no_grad()
def position_losses(model: NestedLM, rows: np.ndarray, teach_scale: float, batch_size: int,
                    stream_chunk: int, stats: Optional[UpdateStats] = None) -> np.ndarray:
    """Mean next-token loss at every position (L,) over rows (N, L + 1), fed in pieces of
    ``stream_chunk`` tokens with the state carried (identical to one call); each call's
    ``clip_rate/*`` stats go into ``stats``."""
    device = next(model.parameters()).device
    total = np.zeros(rows.shape[1] - 1)
    for start in range(0, len(rows), batch_size):
        batch = torch.as_tensor(rows[start:start + batch_size].astype(np.int64), device=device)
        state, losses = None, []
        for lo in range(0, batch.shape[1] - 1, stream_chunk):
            hi = min(lo + stream_chunk, batch.shape[1] - 1)
            result = model(batch[:, lo:hi], state, teach_scale)
            state = result.state
            if stats is not None:
                for key, value in result.stats.items():
                    if key.startswith("clip_rate/"):
                        stats.add(key, torch.tensor(value))
            losses.append(F.cross_entropy(result.logits.float().transpose(1, 2), batch[:, lo + 1:hi + 1],
                                          reduction="none"))
        total += torch.cat(losses, dim=1).sum(0).double().cpu().numpy()
    return total / len(rows)


def validation_rows(stream: np.ndarray, length: int, count: int) -> np.ndarray:
    """``count`` consecutive windows of ``length + 1`` tokens from the start of ``stream``
    (fewer if the stream is short; an error if not even one fits)."""
    n = min(count, len(stream) // (length + 1))
    if n < 1:
        raise ValueError(f"eval.icl.length: {length} tokens need a validation stream of at least "
                         f"{length + 1} tokens, got {len(stream)}")
    return stream[:n * (length + 1)].reshape(n, length + 1)


def bucketed(losses: np.ndarray, bucket: int) -> list[dict]:
    """Mean loss per bucket of positions: [{start, end, loss}]."""
    return [{"start": lo, "end": min(lo + bucket, len(losses)), "loss": float(losses[lo:lo + bucket].mean())}
            for lo in range(0, len(losses), bucket)]


def icl_effect(model: NestedLM, rows: np.ndarray, teach_scale: float, batch_size: int,
               stream_chunk: int, bucket: int) -> dict:
    """Loss with the updates on, off, and with each mechanism frozen alone; by position."""
    stats = UpdateStats()
    on = position_losses(model, rows, teach_scale, batch_size, stream_chunk, stats)
    off = position_losses(model, rows, 0.0, batch_size, stream_chunk)
    half = len(on) // 2
    out = {"sequences": int(len(rows)), "length": int(rows.shape[1] - 1), "teach_scale": teach_scale,
           "loss_on": float(on.mean()), "loss_off": float(off.mean()), "gain": float(off.mean() - on.mean()),
           "gain_second_half": float(off[half:].mean() - on[half:].mean()),
           "ablation": {}, "by_position": {"on": bucketed(on, bucket), "off": bucketed(off, bucket)},
           "clip_rate": {k.split("/", 1)[1]: v for k, v in stats.as_dict().items() if k.startswith("clip_rate/")}}
    for name in mechanisms(model):
        with overridden(model, levels={name: 0.0}):
            frozen = position_losses(model, rows, teach_scale, batch_size, stream_chunk)
        out["ablation"][name] = {"loss": float(frozen.mean()), "gain": float(frozen.mean() - on.mean())}
    return out


def fast_weight_norms(model: NestedLM, state) -> dict[str, float]:
    """Frobenius norm (over heads, tensors and the batch row 0) of every fast weight."""
    norms = {}
    for i, layer in enumerate(state.layers):
        memory = layer.mixer.memory
        if memory is None:
            continue
        if hasattr(memory, "proj"):
            norms[f"layer{i}.selfmod"] = float(memory.proj.read[0].double().norm())
        norms[f"layer{i}.memory"] = float(math.sqrt(sum(w[0].double().pow(2).sum() for w in memory.lmm.read)))
        for lvl, weights in enumerate(layer.ffn.weights):
            if weights is not None:
                norms[f"layer{i}.cms{lvl}"] = float(math.sqrt(sum(w[0].double().pow(2).sum() for w in weights)))
    return norms


@torch.no_grad()
def stream_stability(model: NestedLM, stream: np.ndarray, teach_scale: float, stream_chunk: int) -> dict:
    """Feed one stream with the inner and residual clips off; fast-weight norms relative
    to their start: the extremes along the stream and at its end."""
    device = next(model.parameters()).device
    tokens = torch.as_tensor(stream.astype(np.int64), device=device)[None]
    with overridden(model, guards_off=True):
        state = model.initial_state()
        start = fast_weight_norms(model, state)
        lo_ratio = {k: 1.0 for k in start}
        hi_ratio = {k: 1.0 for k in start}
        finite = True
        for lo in range(0, tokens.shape[1], stream_chunk):
            logits, state, _ = model(tokens[:, lo:lo + stream_chunk], state, teach_scale)
            norms = fast_weight_norms(model, state)
            finite = finite and bool(torch.isfinite(logits).all()) and all(map(math.isfinite, norms.values()))
            for k, v in norms.items():
                ratio = v / start[k] if start[k] > 0 else math.inf
                lo_ratio[k], hi_ratio[k] = min(lo_ratio[k], ratio), max(hi_ratio[k], ratio)
            if not finite:
                break
    if not start:
        return {"tokens": int(tokens.shape[1]), "teach_scale": teach_scale, "finite": finite, "norms": {}}
    return {"tokens": int(tokens.shape[1]), "teach_scale": teach_scale, "finite": finite,
            "max_ratio": max(hi_ratio.values()), "min_ratio": min(lo_ratio.values()),
            "norms": {k: {"start": start[k], "min_ratio": lo_ratio[k], "max_ratio": hi_ratio[k]} for k in start}}

"""Continuum Memory System (Nested Learning Eqs. 30-31): HOPE's feed-forward chain.

Levels run highest frequency first; each is a SwiGLU MLP applied residually along the
chain, and the block adds the sum of the level outputs to the residual stream:

    z_0 = x,   o_l = MLP_l(z_{l-1}),   z_l = z_{l-1} + o_l,   y = clip(sum_l o_l)   (Eq. 30)

Level l with chunk C_l keeps its fast weights for C_l tokens; at each boundary

    theta_l <- theta_0 + rho_l^s (theta_l - theta_0)
               - eta_l * m_l * sum_{t in chunk} grad_theta <o_t, u_t>                 (Eq. 31)

all evaluated at the chunk-start weights, with the retention rho_l (``retention``; 1 =
the paper's rule) pulling the fast weights back toward the slow ones theta_0 (as the
memories forget back to theirs; s = teach_scale * m_l, so s = 0 changes nothing), where u_t = clip(teach_scale * delta_t) is the
teach signal (``teach.py``, detached) and m_l = ``teach.levels.cms<l>``. The teach
signal of a step is known only when the next step's first token arrives, so the model
calls ``absorb`` then (update, then read). A level with ``chunk: null`` is static; with
every level static the chain is a plain MLP (the Transformer++ SwiGLU for one level).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlrepro.model.config import CMSLevel
from nlrepro.model.inner import InnerContext, detached_write, frobenius
from nlrepro.model.layers import SwiGLU, silu_grad

Weights = tuple[Tensor, Tensor, Tensor]   # w1 (w, d), w3 (w, d), w2 (d, w); batched (B|1, ...)


@dataclass
class CMSState:
    """Per level (None for static levels): fast weights, the summed gradient of the
    current chunk so far, and the last step's activations (z, a, b) awaiting their teach signal."""

    weights: tuple[Optional[Weights], ...]
    accum: tuple[Optional[Weights], ...]
    pending: tuple[Optional[tuple[Tensor, Tensor, Tensor]], ...]


def swiglu_inner_grad(weights: Weights, acts: tuple[Tensor, Tensor, Tensor], u: Tensor) -> Weights:
    """sum_t grad_W <W2 (silu(W1 z_t) * W3 z_t), u_t> for z, u (B, n, *), analytically."""
    w1, w3, w2 = weights
    z, a, b = acts
    g = u @ w2                                    # d<o,u>/dh, (B, n, width)
    h = F.silu(a) * b
    da = g * b * silu_grad(a)
    db = g * F.silu(a)
    return da.mT @ z, db.mT @ z, u.mT @ h


class ContinuumMemory(nn.Module):
    """A chain of SwiGLU levels with per-level update frequencies."""

    def __init__(self, dim: int, levels: tuple[CMSLevel, ...], clip_output: bool):
        super().__init__()
        self.levels = nn.ModuleList(SwiGLU(dim, level.width) for level in levels)
        self.chunks = [level.chunk for level in levels]
        self.lrs = [level.lr for level in levels]
        self.retentions = [level.retention for level in levels]
        self.clip_output = clip_output

    @property
    def dynamic(self) -> bool:
        return any(c is not None for c in self.chunks)

    def initial_state(self) -> CMSState:
        weights = tuple(
            None if c is None else (m.w1.unsqueeze(0), m.w3.unsqueeze(0), m.w2.unsqueeze(0))
            for m, c in zip(self.levels, self.chunks)
        )
        none = tuple(None for _ in self.levels)
        return CMSState(weights, none, none)

    def forward(self, x: Tensor, state: CMSState, ctx: InnerContext) -> tuple[Tensor, CMSState]:
        z, total, pending = x, 0, []
        for level, weights in zip(self.levels, state.weights):
            if weights is None:
                out, acts = level(z), None
            else:
                w1, w3, w2 = weights
                a, b = z @ w1.mT, z @ w3.mT
                out, acts = (F.silu(a) * b) @ w2.mT, (z, a, b)
            pending.append(acts)
            total = total + out
            z = z + out
        if self.clip_output:
            total = ctx.clip_residual("residual_cms", total)
        return total, CMSState(state.weights, state.accum, tuple(pending))

    def absorb(self, state: CMSState, u: Optional[Tensor], end_pos: int, ctx: InnerContext) -> CMSState:
        """Add the pending step's Eq. 31 terms for teach signal u (None = scale 0), then
        apply each level whose chunk ends at ``end_pos``; returns the state without pending."""
        weights, accum = list(state.weights), list(state.accum)
        for i, (chunk, acts) in enumerate(zip(self.chunks, state.pending)):
            if chunk is None:
                continue
            if u is not None and acts is not None:
                with torch.set_grad_enabled(torch.is_grad_enabled() and not ctx.detach):
                    grad = swiglu_inner_grad(weights[i], acts, u)
                accum[i] = grad if accum[i] is None else tuple(s + g for s, g in zip(accum[i], grad))
            if end_pos % chunk == 0 and accum[i] is not None:
                step = -self.lrs[i] * ctx.config.multiplier(f"cms{i}")
                keep = self.retentions[i] ** ctx.scale(f"cms{i}")
                level = self.levels[i]
                slow = (level.w1, level.w3, level.w2)
                deltas = ctx.clip_updates(tuple(step * g + (keep - 1) * (w - w0)
                                                for g, w, w0 in zip(accum[i], weights[i], slow)))
                new = tuple(w + d for w, d in zip(weights[i], deltas))
                weights[i] = detached_write(weights[i], new, ctx.detach)
                accum[i] = None
                ctx.stats.add(f"update_norm/cms{i}", frobenius(deltas))
        return CMSState(tuple(weights), tuple(accum), tuple(None for _ in self.levels))

"""Runtime controls shared by every in-context mechanism during one call.

The model builds one ``InnerContext`` per forward from the teach scale in force (a runtime
float, docs/MODEL_DECISIONS.md §6), its ``InContextConfig`` (multipliers and clips) and
``memory.detach_updates``; the
mechanisms read their scale from it and report the norms of the updates they apply.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from nlrepro.model.config import InContextConfig
from nlrepro.model.layers import clip_matrix, clip_rms


class UpdateStats:
    """Running means of detached scalars (update norms, teach-signal norm) by name."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, name: str, value: Tensor) -> None:
        value = value.detach().float()
        self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._counts[name] = self._counts.get(name, 0) + 1

    def as_dict(self) -> dict[str, float]:
        return {name: float(total) / self._counts[name] for name, total in self._sums.items()}


@dataclass
class InnerContext:
    """Scales, clips and the stats sink for the in-context updates of one call."""

    # The global teach scale in force (schedule applied by the caller).
    teach_scale: float
    # Per-mechanism multipliers and the residual, inner and teach clips.
    config: InContextConfig
    # memory.detach_updates: no gradient through any write.
    detach: bool
    # Where mechanisms report their update norms.
    stats: UpdateStats = field(default_factory=UpdateStats)

    @property
    def teach_clip(self) -> Optional[float]:
        return self.config.teach_clip

    def scale(self, mechanism: str) -> float:
        """teach_scale times the mechanism's multiplier (``memory``, ``selfmod``, ``cms0``...)."""
        return self.teach_scale * self.config.multiplier(mechanism)

    def clip_updates(self, deltas: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """``inner_clip`` (clip.inner) on each committed change of fast weights (per sequence, head and
        tensor); reports the share of matrices it scaled down as ``clip_rate/inner``."""
        limit = self.config.inner_clip
        if limit is None:
            return deltas
        bound = [d.detach().flatten(-2).norm(dim=-1) > limit for d in deltas]
        self.stats.add("clip_rate/inner", torch.cat([b.flatten() for b in bound]).float().mean())
        return tuple(clip_matrix(d, limit) for d in deltas)

    def clip_residual(self, name: str, x: Tensor) -> Tensor:
        """``residual_clip`` (clip.residual, per-token RMS) on a memory or CMS branch output; reports the
        share of tokens it scaled down as ``clip_rate/<name>``."""
        limit = self.config.residual_clip
        if limit is None:
            return x
        rms = x.detach().pow(2).mean(-1)
        self.stats.add(f"clip_rate/{name}", (rms > limit * limit).float().mean())
        return clip_rms(x, limit)


def detached_write(old: tuple[Tensor, ...], new: tuple[Tensor, ...], detach: bool) -> tuple[Tensor, ...]:
    """The written weights; with ``detach`` the change carries no gradient (the old
    weights still do, so the initial weights keep their direct gradient)."""
    if not detach:
        return new
    return tuple(o + (n - o).detach() for o, n in zip(old, new))


def frobenius(tensors: tuple[Tensor, ...], batch_dims: int = 1) -> Tensor:
    """Mean over the leading ``batch_dims`` dims of the joint Frobenius norm of the rest."""
    total = sum(t.detach().float().pow(2).flatten(batch_dims).sum(-1) for t in tensors)
    return torch.as_tensor(total).sqrt().mean()

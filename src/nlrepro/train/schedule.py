"""Schedules applied before every forward: the outer learning rate and the teach scale."""
from __future__ import annotations

import math

from nlrepro.train.config import TeachConfig


def lr_at(step: int, peak: float, warmup: int, total: int, min_frac: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine to ``min_frac * peak``
    at ``total``. ``step`` counts from 0 (the first optimiser step)."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


class TeachSchedule:
    """The teach scale in force at a step (docs/MODEL_DECISIONS.md §6): linear warmup from 0 over
    ``warmup_steps``, constant ``teach_scale``, then from ``decay_start`` a linear decay
    over ``decay_steps`` to ``floor * teach_scale``, held there (never zero by default)."""

    def __init__(self, teach_scale: float, cfg: TeachConfig):
        self.scale, self.cfg = teach_scale, cfg

    def __call__(self, step: int) -> float:
        cfg = self.cfg
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return self.scale * (step + 1) / cfg.warmup_steps
        if cfg.decay_start is None or step < cfg.decay_start:
            return self.scale
        progress = min(1.0, (step - cfg.decay_start) / cfg.decay_steps)
        return self.scale * (1.0 - (1.0 - cfg.floor) * progress)

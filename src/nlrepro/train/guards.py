"""Stability guards: skip non-finite steps, stop after too many, and name the culprit.

Checking every module's output on every step would cost time, so the normal path only
checks the loss and the gradient norm. When a run must stop, the failing batch is run
once more with forward hooks on every module, which finds the first module (in
execution order) whose output is non-finite; the batch and that finding are written to
a debug snapshot.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from nlrepro.train.checkpoint import write_torch


def all_finite(obj) -> bool:
    """True when every floating tensor inside ``obj`` (tensor, tuple, dataclass...) is finite."""
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, (list, tuple)):
        return all(all_finite(v) for v in obj)
    if hasattr(obj, "__dataclass_fields__"):
        return all(all_finite(getattr(obj, f)) for f in obj.__dataclass_fields__)
    return True


def first_nonfinite_module(model: nn.Module, run: Callable[[], None]) -> str | None:
    """Run ``run()`` (a training-mode forward, gradients on, as in the failing step)
    with hooks; the name of the first module whose output went non-finite, or None."""
    found: list[str] = []
    handles = []

    def hook(name):
        def fn(_module, _inputs, output):
            if not found and not all_finite(output):
                found.append(name)
        return fn

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.enable_grad():
            run()
    except Exception:  # a crash inside the forward still leaves the finding
        pass
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def first_nonfinite_grad(model: nn.Module) -> str | None:
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return name
    return None


class SkipCounter:
    """Counts consecutive skipped steps (the run's total lives in its ``Progress``)."""

    def __init__(self, max_consecutive: int):
        self.max = max_consecutive
        self.consecutive = 0
        self.first_step: int | None = None

    def record(self, step: int, finite: bool) -> bool:
        """Record one step; True when the run must stop."""
        if finite:
            self.consecutive, self.first_step = 0, None
            return False
        self.consecutive += 1
        if self.first_step is None:
            self.first_step = step
        return self.consecutive >= self.max


def write_snapshot(path: Path, **payload) -> None:
    write_torch(path, payload)

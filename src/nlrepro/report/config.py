"""Typed config of the report stage (params.yaml ``report``) and of the regression gate
(params.yaml ``gate``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nlrepro.configlib import ConfigError, rng
from nlrepro.model.config import Variant


@dataclass(frozen=True)
class ReportConfig:
    """What the report stage draws and compares against."""

    # Resolution of the PNG figures under plots/figures.
    dpi: int = field(default=110, metadata=rng(50, 600))
    # Throughput is also given as a ratio to this variant (if it was trained).
    reference_variant: Variant = "transformer"


@dataclass(frozen=True)
class GateRule:
    """How one metric may move before the gate fails: ``better`` says which way is an
    improvement; a change the other way is allowed up to max(abs, rel * |baseline|), the
    allowance of one run against one run (calibrated on measured noise; with several
    seeds on both sides the gate scales it and adds a Welch t-test, report/gate.py)."""

    better: Literal["lower", "higher"]
    abs: float = field(default=0.0, metadata=rng(0.0, None))
    rel: float = field(default=0.0, metadata=rng(0.0, None))

    def allowed(self, baseline: float) -> float:
        return max(self.abs, self.rel * abs(baseline))


@dataclass(frozen=True)
class GateConfig:
    """The regression gate (``python -m nlrepro.report.gate``)."""

    # Revision or experiment name compared against when --baseline is not given.
    baseline: str = "HEAD"
    # Metrics file compared (the report stage's summary).
    file: str = "metrics/summary.json"
    # Metric name (after the variant, e.g. val_loss) or fnmatch pattern -> rule. An exact
    # name wins over a pattern; patterns are tried in the order written. Metrics with no
    # rule (timings, for instance) are listed but never fail the gate.
    rules: dict[str, GateRule] = field(default_factory=dict)
    # Level of the one-sided Welch t-test applied when both sides have several seeds.
    alpha: float = field(default=0.05, metadata=rng(1e-6, 0.5))

    def validate(self, path: str) -> None:
        if not self.file:
            raise ConfigError(f"{path}.file: a metrics file is required")

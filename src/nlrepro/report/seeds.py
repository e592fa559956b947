"""Aggregation over training seeds: mean, spread, Student-t intervals, paired differences.

Every number the report compares is a draw: another seed (or another CPU, whose rounding
sends training down another path) gives another value. With ``n`` seeds a metric is
summarised by its mean, the sample standard deviation ``s`` (n - 1 in the denominator)
and the 95% Student-t interval ``mean +- t_{0.975, n-1} s / sqrt(n)``. Variants are
compared seed by seed (same seed, same evaluation items), each against the reference
variant and then pair by pair: ``d_k = x_k(a) - x_k(b)`` with its own mean, interval and
the number of seeds in which ``a`` is better. With one seed no interval exists and none is given.

The Student-t quantile comes from SciPy (``scipy.stats.t``).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Optional

from scipy.stats import t as student_t

CONFIDENCE = 0.95
# (metric, label) of the headline metrics: the report's seed and paired tables, and
# seeds.png (FIGURE_METRICS). Zero-shot accuracies are added when they were evaluated.
HEADLINE = [
    ("val_loss", "val loss (nats/token)"),
    ("ppl_token", "test perplexity / token"),
    ("bits_per_byte", "test bits / byte"),
    ("last_word_acc", "last word acc"),
    ("choice_acc_norm", "real-vs-distractor acc_norm"),
    ("passkey_acc", "passkey acc"),
    ("icl_gain", "in-context gain (nats/token)"),
]
FIGURE_METRICS = [HEADLINE[0], HEADLINE[1], HEADLINE[4], HEADLINE[6]]
# Metric names where a lower value is better; every other metric (accuracies, in-context
# gains, log-likelihoods) is better higher.
_LOWER_MARKERS = ("loss", "ppl", "perplexity", "bits_per_byte", "skipped", "seconds")


def lower_is_better(metric: str) -> bool:
    """Direction of a summary metric, from its name (``val_loss``, ``ppl_token`` ...)."""
    return any(marker in metric for marker in _LOWER_MARKERS)


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value for ``n`` samples (``n - 1`` degrees of freedom)."""
    if n < 2:
        raise ValueError("an interval needs at least two samples")
    return float(student_t.ppf(0.5 + confidence / 2, n - 1))


@dataclass(frozen=True)
class SeedStats:
    """One metric over seeds. ``std`` and the interval are None below two finite values."""

    values: dict[int, float]          # seed -> value
    mean: float
    std: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]

    @property
    def n(self) -> int:
        return len(self.values)

    def as_json(self, prefix: str = "seed") -> dict[str, float]:
        """``{mean, n, [std, ci95_low, ci95_high], seed<k>...}``: the stable names of
        metrics/summary.json (no interval key at all with one seed)."""
        out: dict[str, float] = {"mean": self.mean, "n": self.n}
        if self.std is not None:
            out.update(std=self.std, ci95_low=self.ci_low, ci95_high=self.ci_high)
        out.update({f"{prefix}{s}": v for s, v in sorted(self.values.items())})
        return out


def seed_stats(values: dict[int, float]) -> SeedStats:
    """Mean, sample sd and the 95% Student-t interval of ``{seed: value}``. A non-finite
    value makes the mean non-finite too (it is the news) and leaves no interval."""
    if not values:
        raise ValueError("no values")
    xs = list(values.values())
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2 or not all(math.isfinite(x) for x in xs):
        return SeedStats(dict(values), mean, None, None, None)
    std = statistics.stdev(xs)
    half = t_quantile(len(xs)) * std / math.sqrt(len(xs))
    return SeedStats(dict(values), mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
    """``variant - reference`` of one metric over the seeds both have."""

    stats: SeedStats                  # of the per-seed differences
    wins: int                         # seeds in which the variant is better

    def as_json(self) -> dict[str, float]:
        return {**self.stats.as_json(prefix="diff_seed"), "wins": self.wins}


def paired_difference(metric: str, variant: dict[int, float],
                      reference: dict[int, float]) -> Optional[Paired]:
    """Seed-by-seed difference; None when no seed has both values."""
    common = sorted(set(variant) & set(reference))
    if not common:
        return None
    diffs = {s: variant[s] - reference[s] for s in common}
    lower = lower_is_better(metric)
    wins = sum(1 for d in diffs.values() if (d < 0 if lower else d > 0))
    return Paired(seed_stats(diffs), wins)


def comparisons(variants: list[str], reference: Optional[str]) -> list[tuple[str, str]]:
    """The pairs ``(a, b)`` compared as ``a - b``: every variant against the reference,
    then every other pair in ``variants`` order (with HOPE, TITAN, Transformer++ and the
    reference Transformer++: hope-transformer, titan-transformer, hope-titan)."""
    others = [v for v in variants if v != reference]
    pairs = [(v, reference) for v in others] if reference in variants else []
    return pairs + [(a, b) for i, a in enumerate(others) for b in others[i + 1:]]


def aggregate(per_seed: dict[str, dict[int, dict[str, float]]], chance: dict[str, float],
              reference: Optional[str]) -> dict:
    """metrics/summary.json from ``{variant: {seed: {metric: value}}}``::

        {"seeds": {"n": 3},
         "<variant>": {"<metric>": {"mean", "n", "std", "ci95_low", "ci95_high",
                                    "seed0", "seed1", ...}},
         "paired": {"<a>-<b>": {"<metric>": {"mean", ..., "diff_seed0", ..., "wins"}}},
         "chance": {"<metric>": value}}

    ``paired`` holds ``a - b`` seed by seed for the pairs of ``comparisons`` (each variant
    against ``reference``, then the other pairs)."""
    seeds = sorted({s for runs in per_seed.values() for s in runs})
    out: dict = {"seeds": {"n": len(seeds)}}
    by_metric = {v: _by_metric(runs) for v, runs in per_seed.items()}
    for variant, metrics in by_metric.items():
        out[variant] = {m: seed_stats(vals).as_json() for m, vals in metrics.items()}
    paired = {}
    for a, b in comparisons(list(per_seed), reference):
        diffs = {m: paired_difference(m, vals, by_metric[b][m])
                 for m, vals in by_metric[a].items() if m in by_metric[b]}
        paired[f"{a}-{b}"] = {m: p.as_json() for m, p in diffs.items() if p is not None}
    if paired:
        out["paired"] = paired
    out["chance"] = dict(chance)
    return out


def _by_metric(runs: dict[int, dict[str, float]]) -> dict[str, dict[int, float]]:
    """``{seed: {metric: v}}`` -> ``{metric: {seed: v}}`` (a metric only some seeds have
    is aggregated over those)."""
    out: dict[str, dict[int, float]] = {}
    for seed in sorted(runs):
        for metric, value in runs[seed].items():
            out.setdefault(metric, {})[seed] = value
    return out


def means(summary: dict, variants: Iterable[str]) -> dict[str, dict[str, float]]:
    """``{variant: {metric: mean}, "chance": ...}``: the flat view the tables and figures
    draw."""
    flat = {v: {m: s["mean"] for m, s in summary[v].items()} for v in variants}
    flat["chance"] = summary["chance"]
    return flat

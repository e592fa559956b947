"""The regression gate: fail when a metric got worse than a baseline past its threshold.

``dvc metrics diff`` shows how metrics moved but always exits 0, so it cannot stop a CI
job or a sweep script. This command asks DVC for the same diff (so a baseline can be any
revision DVC resolves: a commit, a branch, a tag or an experiment name) and judges every
metric by the rule params.yaml ``gate.rules`` gives its name::

    PYTHONPATH=src python -m nlrepro.report.gate                 # workspace vs gate.baseline
    PYTHONPATH=src python -m nlrepro.report.gate --baseline main
    PYTHONPATH=src python -m nlrepro.report.gate --baseline main --target exp-1a2b3

Each metric ``<variant>.<metric>`` is judged on its mean over seeds
(``hope.val_loss.mean`` in metrics/summary.json; the per-seed values are
``hope.val_loss.seed<k>``). A rule ``{better: lower|higher, abs, rel}`` gives the
*allowance* ``max(abs, rel * |baseline|)``: how far one run may move the wrong way
through noise alone. The defaults are calibrated on measured seed-to-seed and
machine-to-machine spread (docs/REPORT.md, "Noise"), so a rerun on another x86 CPU
passes. Then:

* one seed on either side: a metric regressed when it moved the wrong way by more than
  the allowance;
* several seeds on both sides (``n_b``, ``n_c``): the allowance shrinks as the noise of a
  difference of means does, to ``allowance * sqrt((1/n_b + 1/n_c) / 2)``, and the move
  must also be significant by a one-sided Welch t-test at ``gate.alpha`` (the two sides'
  spreads may differ, e.g. a change that destabilises training widens them; the seeds
  are not paired because another CPU or another code path decorrelates seed k on one side
  from seed k on the other).

Exit status: 0 passed, 1 a gated metric regressed (or went missing, or is not finite), 2
bad input (unknown revision, no metrics file ...). Summaries written before seeds were an
axis (``hope.val_loss`` a plain number) are read as one seed.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from scipy.stats import ttest_ind

from nlrepro.configlib import load_section
from nlrepro.errors import NLReproError, cli_main
from nlrepro.report.config import GateConfig, GateRule

SKIP_PREFIXES = ("chance.",)  # what a uniform guess scores is a reference, not a result
# Derived numbers of metrics/summary.json: listed with --all, never judged themselves.
DERIVED_PREFIXES = ("paired.", "seeds.")
FAILING = ("REGRESSED", "MISSING", "NOT FINITE")
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Verdict:
    key: str
    baseline: Optional[float]
    current: Optional[float]
    rule: Optional[GateRule]
    status: str            # ok | improved | REGRESSED | MISSING | NOT FINITE | new | not gated
    worse_by: Optional[float] = None
    allowed: Optional[float] = None
    seeds: tuple[int, int] = (1, 1)   # samples on the (baseline, current) side
    p_value: Optional[float] = None   # one-sided Welch test, several seeds on both sides

    @property
    def failed(self) -> bool:
        return self.status in FAILING


def find_rule(key: str, rules: dict[str, GateRule]) -> Optional[GateRule]:
    """The rule of ``hope.val_loss``: an exact entry for the full key or for the metric
    name (``val_loss``) first, then the first pattern, in the order written, that matches
    either."""
    name = key.split(".", 1)[1] if "." in key else key
    for candidate in (key, name):
        if candidate in rules:
            return rules[candidate]
    for pattern, rule in rules.items():
        if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(key, pattern):
            return rule
    return None


def _number(value) -> Optional[float]:
    if value is None or isinstance(value, (dict, list, str)):
        return None
    return float(value)


def welch_p_worse(base: list[float], cur: list[float], better: str) -> float:
    """One-sided p-value of "the current mean is worse than the baseline mean" by Welch's
    t-test (SciPy). Two sides without spread (a deterministic rerun) give 0 for any move
    the wrong way and 1 otherwise."""
    alternative = "greater" if better == "lower" else "less"   # of mean(cur) - mean(base)
    moved = math.fsum(cur) / len(cur) - math.fsum(base) / len(base)
    if max(cur) == min(cur) and max(base) == min(base):
        worse = moved > 0 if better == "lower" else moved < 0
        return 0.0 if worse else 1.0
    return float(ttest_ind(cur, base, equal_var=False, alternative=alternative).pvalue)


def judge(key: str, baseline: Optional[float], current: Optional[float],
          rule: Optional[GateRule], base_seeds: tuple[float, ...] = (),
          cur_seeds: tuple[float, ...] = (), alpha: float = DEFAULT_ALPHA) -> Verdict:
    """The verdict on one metric's mean; ``base_seeds`` / ``cur_seeds`` are the per-seed
    values behind each mean (empty: one run)."""
    seeds = (max(len(base_seeds), 1), max(len(cur_seeds), 1))
    if rule is None:
        return Verdict(key, baseline, current, None, "not gated", seeds=seeds)
    if current is None:
        return Verdict(key, baseline, None, rule,
                       "MISSING" if baseline is not None else "not gated", seeds=seeds)
    if not math.isfinite(current):
        return Verdict(key, baseline, current, rule, "NOT FINITE", seeds=seeds)
    if baseline is None or not math.isfinite(baseline):
        return Verdict(key, baseline, current, rule, "new", seeds=seeds)
    worse = (current - baseline) if rule.better == "lower" else (baseline - current)
    allowed = rule.allowed(baseline)
    p_value = None
    several = min(seeds) >= 2 and all(math.isfinite(x) for x in (*base_seeds, *cur_seeds))
    if several:
        allowed *= math.sqrt((1 / seeds[0] + 1 / seeds[1]) / 2)
        p_value = welch_p_worse(list(base_seeds), list(cur_seeds), rule.better)
    # Float noise in a copied number must not count as a move.
    slack = 1e-12 * max(1.0, abs(baseline))
    if worse > allowed + slack and (p_value is None or p_value < alpha):
        status = "REGRESSED"
    elif worse < -slack:
        status = "improved"
    else:
        status = "ok"
    return Verdict(key, baseline, current, rule, status, worse, allowed, seeds, p_value)


def _metric_groups(diff: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """``{"hope.val_loss": {"mean": entry, "seed0": entry, ...}}`` from the flattened keys
    of metrics/summary.json; a plain ``hope.val_loss`` number (a summary written before
    seeds were an axis) is its own mean."""
    groups: dict[str, dict[str, dict]] = {}
    for key, entry in diff.items():
        if key.startswith(SKIP_PREFIXES + DERIVED_PREFIXES):
            continue
        entry = entry if isinstance(entry, dict) else {}
        parts = key.split(".")
        metric, stat = (".".join(parts[:2]), parts[2]) if len(parts) == 3 else (key, "mean")
        slot = groups.setdefault(metric, {}).setdefault(stat, {})
        for side in ("old", "new"):   # an old flat number and a new mean meet here
            if _number(entry.get(side)) is not None:
                slot[side] = entry[side]
    return groups


def _seed_values(stats: dict[str, dict], side: str) -> tuple[float, ...]:
    values = [_number(e.get(side)) for k, e in sorted(stats.items()) if k.startswith("seed")]
    values = [v for v in values if v is not None]
    return tuple(values) if len(values) >= 2 else ()


def compare(diff: dict[str, dict], rules: dict[str, GateRule],
            alpha: float = DEFAULT_ALPHA) -> list[Verdict]:
    """Verdicts for one file's part of ``dvc metrics diff --json --all``:
    ``{key: {"old": x, "new": y, ...}}``, one per metric mean (``hope.val_loss``); the
    derived ``paired.*`` and ``seeds.*`` numbers are listed as not gated."""
    verdicts = []
    for metric, stats in sorted(_metric_groups(diff).items()):
        if "mean" not in stats:
            continue
        mean = stats["mean"]
        verdicts.append(judge(metric, _number(mean.get("old")), _number(mean.get("new")),
                              find_rule(metric, rules), _seed_values(stats, "old"),
                              _seed_values(stats, "new"), alpha))
    for key in sorted(k for k in diff if k.startswith(DERIVED_PREFIXES)):
        entry = diff[key] if isinstance(diff[key], dict) else {}
        verdicts.append(judge(key, _number(entry.get("old")), _number(entry.get("new")), None))
    return verdicts


def dvc_metrics_diff(baseline: str, target: Optional[str], file: str) -> dict[str, dict]:
    """``dvc metrics diff`` as JSON, restricted to ``file``."""
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    cmd = [dvc, "metrics", "diff", baseline] + ([target] if target else []) + \
          ["--all", "--json", "--targets", file]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    except OSError as exc:
        raise NLReproError(f"gate: cannot run dvc ({exc.strerror})") from None
    if out.returncode != 0:
        lines = [l.strip() for l in out.stderr.splitlines() if l.strip()]
        msg = lines[-1] if lines else f"exit {out.returncode}"
        raise NLReproError(f"gate: dvc metrics diff {baseline}: {msg.removeprefix('ERROR: ')}")
    try:
        data = json.loads(out.stdout or "{}")
    except json.JSONDecodeError:
        raise NLReproError("gate: dvc metrics diff printed no JSON") from None
    part = data.get(file) or data.get(os.path.normpath(file)) or {}
    if not part:
        raise NLReproError(f"gate: {file}: no metrics in either revision (run `dvc repro report`)")
    if all(_number(v.get("old")) is None for v in part.values() if isinstance(v, dict)):
        raise NLReproError(f"gate: {file}: not in baseline '{baseline}' (was the report stage "
                           f"run and its metrics committed there?)")
    if all(_number(v.get("new")) is None for v in part.values() if isinstance(v, dict)):
        where = f"'{target}'" if target else "the workspace"
        raise NLReproError(f"gate: {file}: not in {where} (run `dvc repro report`)")
    return part


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.6g}"


def _rule_text(v: Verdict) -> str:
    if v.rule is None:
        return ""
    parts = [f"{v.rule.better} is better"]
    if v.allowed is not None:
        parts.append(f"allow {_fmt(v.allowed)}")
    if v.p_value is not None:
        parts.append(f"Welch p {v.p_value:.3g}")
    return ", ".join(parts)


def table(verdicts: list[Verdict], markdown: bool = False) -> str:
    header = ["metric", "baseline", "current", "worse by", "seeds", "rule", "status"]
    rows = [[v.key, _fmt(v.baseline), _fmt(v.current),
             _fmt(v.worse_by) if v.worse_by is not None else "-", f"{v.seeds[0]}/{v.seeds[1]}",
             _rule_text(v), v.status]
            for v in verdicts]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def run_gate(baseline: str, target: Optional[str], file: str, rules: dict[str, GateRule],
             show_all: bool = False, markdown: bool = False,
             alpha: float = DEFAULT_ALPHA) -> int:
    """Print the verdicts and return the exit status. The table lists the gated metrics that
    moved (or failed); ``show_all`` lists every metric, unchanged and ungated ones too."""
    verdicts = compare(dvc_metrics_diff(baseline, target, file), rules, alpha)
    gated = [v for v in verdicts if v.rule is not None]
    moved = [v for v in gated if v.status != "ok" or v.worse_by]
    shown = verdicts if show_all else moved
    failed = [v for v in verdicts if v.failed]
    where = target or "workspace"
    print(f"gate: {file}, {where} against {baseline}: {len(gated)} gated metrics "
          f"({len(gated) - len(moved)} unchanged), {len(verdicts) - len(gated)} not gated "
          f"(--all lists every metric)")
    if shown:
        print(table(shown, markdown))
    if failed:
        print(f"gate FAILED: {len(failed)} metric(s) past their threshold: "
              + ", ".join(v.key for v in failed))
        return 1
    print("gate passed")
    return 0


@cli_main
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m nlrepro.report.gate",
                                 description="Exit 1 when a metric regressed past its "
                                             "gate.rules threshold against a baseline.")
    ap.add_argument("--baseline", help="revision or experiment to compare against "
                                       "(default: gate.baseline in params.yaml)")
    ap.add_argument("--target", help="revision or experiment to judge (default: workspace)")
    ap.add_argument("--file", help="metrics file (default: gate.file in params.yaml)")
    ap.add_argument("--all", action="store_true", help="also list metrics without a rule")
    ap.add_argument("--md", action="store_true", help="print the table as markdown")
    args = ap.parse_args(argv)
    cfg = load_section(GateConfig, "gate")
    return run_gate(args.baseline or cfg.baseline, args.target, args.file or cfg.file,
                    cfg.rules, args.all, args.md, cfg.alpha)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

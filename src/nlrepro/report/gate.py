"""The regression gate: fail when a metric got worse than a baseline past its threshold.

``dvc metrics diff`` shows how metrics moved but always exits 0, so it cannot stop a CI
job or a sweep script. This command asks DVC for the same diff (so a baseline can be any
revision DVC resolves: a commit, a branch, a tag or an experiment name) and judges every
metric by the rule params.yaml ``gate.rules`` gives its name::

    PYTHONPATH=src python -m nlrepro.report.gate                 # workspace vs gate.baseline
    PYTHONPATH=src python -m nlrepro.report.gate --baseline main
    PYTHONPATH=src python -m nlrepro.report.gate --baseline main --target exp-1a2b3

A rule ``{better: lower|higher, abs, rel}`` allows a move the wrong way of up to
``max(abs, rel * |baseline|)``. Exit status: 0 passed, 1 a gated metric regressed (or
went missing, or is not finite), 2 bad input (unknown revision, no metrics file ...).
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

from nlrepro.config import load_params
from nlrepro.errors import NLReproError, cli_main
from nlrepro.report.config import GateRule

SKIP_PREFIXES = ("chance.",)  # what a uniform guess scores is a reference, not a result
FAILING = ("REGRESSED", "MISSING", "NOT FINITE")


@dataclass(frozen=True)
class Verdict:
    key: str
    baseline: Optional[float]
    current: Optional[float]
    rule: Optional[GateRule]
    status: str            # ok | improved | REGRESSED | MISSING | NOT FINITE | new | not gated
    worse_by: Optional[float] = None
    allowed: Optional[float] = None

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


def judge(key: str, baseline: Optional[float], current: Optional[float],
          rule: Optional[GateRule]) -> Verdict:
    if rule is None:
        return Verdict(key, baseline, current, None, "not gated")
    if current is None:
        return Verdict(key, baseline, None, rule, "MISSING" if baseline is not None else "not gated")
    if not math.isfinite(current):
        return Verdict(key, baseline, current, rule, "NOT FINITE")
    if baseline is None or not math.isfinite(baseline):
        return Verdict(key, baseline, current, rule, "new")
    worse = (current - baseline) if rule.better == "lower" else (baseline - current)
    allowed = rule.allowed(baseline)
    # Float noise in a copied number must not count as a move.
    slack = 1e-12 * max(1.0, abs(baseline))
    if worse > allowed + slack:
        status = "REGRESSED"
    elif worse < -slack:
        status = "improved"
    else:
        status = "ok"
    return Verdict(key, baseline, current, rule, status, worse, allowed)


def compare(diff: dict[str, dict], rules: dict[str, GateRule]) -> list[Verdict]:
    """Verdicts for one file's part of ``dvc metrics diff --json --all``:
    ``{key: {"old": x, "new": y, ...}}``."""
    verdicts = []
    for key in sorted(diff):
        if key.startswith(SKIP_PREFIXES):
            continue
        entry = diff[key] if isinstance(diff[key], dict) else {}
        verdicts.append(judge(key, _number(entry.get("old")), _number(entry.get("new")),
                              find_rule(key, rules)))
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
    return ", ".join(parts)


def table(verdicts: list[Verdict], markdown: bool = False) -> str:
    header = ["metric", "baseline", "current", "worse by", "rule", "status"]
    rows = [[v.key, _fmt(v.baseline), _fmt(v.current),
             _fmt(v.worse_by) if v.worse_by is not None else "-", _rule_text(v), v.status]
            for v in verdicts]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def run_gate(baseline: str, target: Optional[str], file: str, rules: dict[str, GateRule],
             show_all: bool = False, markdown: bool = False) -> int:
    """Print the verdicts and return the exit status. The table lists the gated metrics that
    moved (or failed); ``show_all`` lists every metric, unchanged and ungated ones too."""
    verdicts = compare(dvc_metrics_diff(baseline, target, file), rules)
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
    cfg = load_params().gate
    return run_gate(args.baseline or cfg.baseline, args.target, args.file or cfg.file,
                    cfg.rules, args.all, args.md)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

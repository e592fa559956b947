"""Measure the noise the regression gate must tolerate, and check the rules against it.

    PYTHONPATH=src python -m nlrepro.report.noise --seeds SUMMARY \
        [--machine SUMMARY_A SUMMARY_B ...] [--md]

``--seeds``: a metrics/summary.json with several training seeds (e.g. after
``dvc exp run -S 'train.seeds=[0,1,2]'``): the seed-to-seed standard deviation ``s`` of
every gated metric. ``--machine``: pairs of summaries of the same seeds and code run on
two machines (or two CPU code paths): the largest machine-to-machine move ``|d|``.

One run against one run differs by noise of standard deviation about ``sqrt(2) s`` (two
independent draws), so a rule should allow at least ``Z * sqrt(2) * s`` with Z = 3 (a
false failure once in ~700 metrics per gate run if the noise is normal), and at least
the largest machine move seen. For every gated metric the table gives ``s``, ``|d|``,
that need, the allowance the rule in params.yaml gives at the seeds' mean, and whether it
covers the need. Exit 1 when a rule is tighter than the noise.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from nlrepro.configlib import load_section
from nlrepro.errors import NLReproError, cli_main
from nlrepro.report.config import GateConfig
from nlrepro.report.gate import find_rule

Z = 3.0
NOT_VARIANTS = ("chance", "seeds", "paired")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NLReproError(f"{path}: not found") from None
    except json.JSONDecodeError:
        raise NLReproError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise NLReproError(f"{path}: expected a metrics/summary.json object")
    return data


def per_seed(summary: dict) -> dict[tuple[str, str], dict[int, float]]:
    """``{(variant, metric): {seed: value}}``; a summary from before seeds were an axis
    (plain numbers) reads as seed 0."""
    out = {}
    for variant, metrics in summary.items():
        if variant in NOT_VARIANTS or not isinstance(metrics, dict):
            continue
        for metric, stat in metrics.items():
            if isinstance(stat, dict):
                values = {int(k[4:]): float(v) for k, v in stat.items()
                          if k.startswith("seed") and v is not None}
            elif isinstance(stat, (int, float)) and not isinstance(stat, bool):
                values = {0: float(stat)}
            else:
                continue
            out[(variant, metric)] = values
    return out


def noise_table(seeds: dict, machines: list[tuple[dict, dict]], rules: dict) -> list[dict]:
    """One row per gated (variant, metric) with finite values in every seed."""
    by_seed = per_seed(seeds)
    pairs = [(per_seed(a), per_seed(b)) for a, b in machines]
    rows = []
    for (variant, metric), values in sorted(by_seed.items()):
        rule = find_rule(f"{variant}.{metric}", rules)
        xs = list(values.values())
        if rule is None or len(xs) < 2 or not all(math.isfinite(x) for x in xs):
            continue
        mean = math.fsum(xs) / len(xs)
        s = statistics.stdev(xs)
        moves = [abs(a[(variant, metric)][k] - b[(variant, metric)][k])
                 for a, b in pairs if (variant, metric) in a and (variant, metric) in b
                 for k in set(a[(variant, metric)]) & set(b[(variant, metric)])]
        moves = [d for d in moves if math.isfinite(d)]
        machine = max(moves) if moves else None
        need = max(Z * math.sqrt(2) * s, machine or 0.0)
        allowed = rule.allowed(mean)
        rows.append({"metric": f"{variant}.{metric}", "mean": mean, "seed_sd": s,
                     "machine": machine, "need": need, "allowed": allowed,
                     "covered": allowed >= need})
    return rows


def render(rows: list[dict], n_seeds: int, n_pairs: int, markdown: bool) -> str:
    head = ["metric", "mean", f"seed sd (n={n_seeds})", f"machine |d| ({n_pairs} pairs)",
            f"need = max({Z:g} sqrt2 sd, |d|)", "rule allows", "covered"]
    body = [[r["metric"], f"{r['mean']:.4g}", f"{r['seed_sd']:.3g}",
             "-" if r["machine"] is None else f"{r['machine']:.3g}", f"{r['need']:.3g}",
             f"{r['allowed']:.3g}", "yes" if r["covered"] else "NO"] for r in rows]
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
                         + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(x[i]) for x in body + [head]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [head] + body)


@cli_main
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m nlrepro.report.noise",
                                 description="Seed and machine noise of every gated metric "
                                             "against the gate.rules allowances.")
    ap.add_argument("--seeds", type=Path, required=True,
                    help="metrics/summary.json of a run with several training seeds")
    ap.add_argument("--machine", type=Path, nargs="*", default=[],
                    help="summaries in pairs: the same run on machine A, then on machine B")
    ap.add_argument("--md", action="store_true", help="print the table as markdown")
    args = ap.parse_args(argv)
    if len(args.machine) % 2:
        raise NLReproError("--machine: give summaries in pairs (A B [A B ...])")
    seeds = _read(args.seeds)
    machines = [(_read(a), _read(b)) for a, b in zip(args.machine[::2], args.machine[1::2])]
    rows = noise_table(seeds, machines, load_section(GateConfig, "gate").rules)
    n_seeds = max((len(v) for v in per_seed(seeds).values()), default=0)
    if n_seeds < 2:
        raise NLReproError(f"{args.seeds}: one seed only; the spread needs two or more")
    print(render(rows, n_seeds, len(machines), args.md))
    tight = [r["metric"] for r in rows if not r["covered"]]
    if tight:
        print(f"{len(tight)} rule(s) tighter than the measured noise: {', '.join(tight)}")
        return 1
    print(f"every gated metric's rule covers the measured noise ({len(rows)} metrics)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

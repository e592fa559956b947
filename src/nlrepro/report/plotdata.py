"""Long-format CSV tables behind the ``dvc plots show`` definitions (plots/data/*.csv).

Each table has a ``series`` column (the variant) that the project's Vega-Lite templates in
.dvc/plots colour by, so one plot overlays every variant whatever ``train.variants``
holds; line tables also have a ``kind`` column (train/val, memory level, in-context
updates on/off) drawn as the dash, together with the revision under ``dvc plots diff``
(bars: shade per revision).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from nlrepro.io import atomic_path
from nlrepro.report.collect import DISPLAY, VariantRun, icl_by_position, passkey_by_length
from nlrepro.report.figures import score_columns
from nlrepro.report.seeds import FIGURE_METRICS


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            for row in rows:
                w.writerow(["" if isinstance(x, float) and not math.isfinite(x) else x
                            for x in row])


def _curve_rows(run: VariantRun, log_kind: str, key: str, series: str, kind: str = ""
                ) -> list[list]:
    return [[s, series, kind, v] for s, v in zip(*run.curve(log_kind, key))]


def seed_rows(aggregated: dict, variants: list[str], names: dict[str, str]) -> list[list]:
    """``seeds.csv``: one row per (headline metric, variant, seed) with the mean and its
    95% interval repeated (empty with one seed)."""
    rows = []
    for metric, _ in FIGURE_METRICS:
        for v in variants:
            stat = aggregated[v].get(metric)
            if stat is None:
                continue
            for key in sorted((k for k in stat if k.startswith("seed")), key=lambda k: int(k[4:])):
                rows.append([metric, names[v], int(key[4:]), stat[key], stat["mean"],
                             stat.get("ci95_low", math.nan), stat.get("ci95_high", math.nan)])
    return rows


def write_plot_data(runs: list[VariantRun], summary: dict, out_dir: Path,
                    aggregated: dict) -> list[Path]:
    """``runs``: one per variant (the mean over seeds); ``summary``: the flat means;
    ``aggregated``: metrics/summary.json."""
    variants = [r.name for r in runs]
    names = {r.name: DISPLAY.get(r.name, r.name) for r in runs}
    tables: dict[str, tuple[list[str], list[list]]] = {}

    loss = []
    for run in runs:
        loss += _curve_rows(run, "train", "loss", names[run.name], "train")
        loss += _curve_rows(run, "val", "loss", names[run.name], "val")
    tables["loss"] = (["step", "series", "kind", "loss"], loss)

    memory_runs = [r for r in runs if r.update_norm_levels()]
    tables["teach_scale"] = (["step", "series", "kind", "teach_scale"], [
        row for run in memory_runs or runs
        for row in _curve_rows(run, "train", "teach_scale", names[run.name])])
    tables["update_norm"] = (["step", "series", "kind", "update_norm"], [
        row for run in memory_runs for level in run.update_norm_levels()
        for row in _curve_rows(run, "train", f"update_norm/{level}", names[run.name], level)])

    scores = []
    for key, label in score_columns(summary, variants):
        chance = summary["chance"].get(key, math.nan)
        for v in variants:
            scores.append([label.replace("\n", " "), names[v], summary[v].get(key, math.nan),
                           chance])
    tables["scores"] = (["metric", "series", "score", "chance"], scores)

    passkey = []
    for run in runs:
        for n, acc in zip(*passkey_by_length(run)):
            passkey.append([n, names[run.name], acc])
    tables["passkey"] = (["length", "series", "acc"], passkey)

    tables["icl_position"] = (["position", "series", "kind", "loss"], [
        [pos, names[run.name], kind, loss] for run in runs
        for kind, (mids, losses) in icl_by_position(run).items()
        for pos, loss in zip(mids, losses)])

    tables["seeds"] = (["metric", "series", "seed", "value", "mean", "ci95_low", "ci95_high"],
                       seed_rows(aggregated, variants, names))

    paths = []
    for name, (header, rows) in tables.items():
        path = out_dir / f"{name}.csv"
        _write_csv(path, header, rows)
        paths.append(path)
    return paths

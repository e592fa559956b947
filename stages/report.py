"""Stage report: every run's training and evaluation outputs -> the comparison.

Reads one run per (variant, seed) of ``train.variants`` x ``train.seeds``. Writes
metrics/summary.json (per variant and metric: every seed, the mean, sd and 95% Student-t
interval; the paired differences against ``report.reference_variant``; chance),
metrics/report.md (the markdown tables, seeds and in-context learning included), plots/figures/*.png and
plots/data/*.csv (the tables behind the `dvc plots show` definitions in dvc.yaml). Every
input is read and checked before the first output is written; see docs/REPORT.md.
"""
from __future__ import annotations

from pathlib import Path

from nlrepro.config import load_params
from nlrepro.errors import cli_main
from nlrepro.io import atomic_dir, atomic_path, write_json
from nlrepro.report.collect import DISPLAY, average_runs, icl_setup, load_runs, summarize
from nlrepro.report.figures import write_figures
from nlrepro.report.plotdata import write_plot_data
from nlrepro.report.seeds import aggregate, means
from nlrepro.report.table import render

SUMMARY, REPORT = Path("metrics/summary.json"), Path("metrics/report.md")
FIGURES, PLOT_DATA = Path("plots/figures"), Path("plots/data")


def lineage(runs) -> dict[str, str]:
    out = {}
    for run in runs:
        lin = run.eval.get("lineage", {})
        ckpt = lin.get("checkpoint", {})
        out[f"{DISPLAY.get(run.name, run.name)} seed {run.seed}"] = (
            f"checkpoint {ckpt.get('path', '?')} sha256 {str(ckpt.get('sha256', '?'))[:12]}, "
            f"step {ckpt.get('step', '?')}, eval teach scale {lin.get('teach_scale', '?')} "
            f"({lin.get('teach_scale_source', '?')}), git {str(lin.get('git_commit', '?'))[:12]}")
    return out


@cli_main
def main() -> None:
    params = load_params()
    variants, seeds = list(params.train.variants), list(params.train.seeds)
    reference = params.report.reference_variant
    runs = load_runs(Path("."), variants, seeds)   # all inputs checked first
    per_seed, chance = summarize(runs)             # checks every eval's icl object too
    aggregated = aggregate(per_seed, chance, reference)
    flat = means(aggregated, variants)
    mean_runs = average_runs(runs)                 # one per variant: curves and figures
    icl = {run.name: icl_setup(run) for run in mean_runs}
    text = render(flat, variants, reference, lineage(runs), icl, aggregated)
    with atomic_dir(FIGURES) as figures, atomic_dir(PLOT_DATA) as data:
        write_figures(mean_runs, flat, figures, params.report.dpi, aggregated)
        write_plot_data(mean_runs, flat, data, aggregated)
    with atomic_path(REPORT) as tmp:
        tmp.write_text(text, encoding="utf-8")
    write_json(SUMMARY, aggregated)                # last: its presence means all is written
    best = min(variants, key=lambda v: flat[v]["val_loss"])
    print(f"report: {len(variants)} variants x {len(seeds)} seeds -> {SUMMARY}, {REPORT}, "
          f"{FIGURES}/, {PLOT_DATA}/; lowest mean val loss {DISPLAY.get(best, best)} "
          f"{flat[best]['val_loss']:.3f}")


if __name__ == "__main__":
    main()

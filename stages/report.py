"""Stage report: every variant's training and evaluation outputs -> the comparison.

Writes metrics/summary.json (flat numbers per variant, plus chance), metrics/report.md
(the markdown tables, in-context learning included), plots/figures/*.png and
plots/data/*.csv (the tables behind the `dvc plots show` definitions in dvc.yaml). Every
input is read and checked before the first output is written; see docs/REPORT.md.
"""
from __future__ import annotations

from pathlib import Path

from nlrepro.config import load_params
from nlrepro.errors import cli_main
from nlrepro.io import atomic_dir, atomic_path, write_json
from nlrepro.report.collect import DISPLAY, icl_setup, load_runs, summarize
from nlrepro.report.figures import write_figures
from nlrepro.report.plotdata import write_plot_data
from nlrepro.report.table import render

SUMMARY, REPORT = Path("metrics/summary.json"), Path("metrics/report.md")
FIGURES, PLOT_DATA = Path("plots/figures"), Path("plots/data")


def lineage(runs) -> dict[str, str]:
    out = {}
    for run in runs:
        lin = run.eval.get("lineage", {})
        ckpt = lin.get("checkpoint", {})
        out[DISPLAY.get(run.name, run.name)] = (
            f"checkpoint {ckpt.get('path', '?')} sha256 {str(ckpt.get('sha256', '?'))[:12]}, "
            f"step {ckpt.get('step', '?')}, eval teach scale {lin.get('teach_scale', '?')} "
            f"({lin.get('teach_scale_source', '?')}), git {str(lin.get('git_commit', '?'))[:12]}")
    return out


@cli_main
def main() -> None:
    params = load_params()
    variants = list(params.train.variants)
    runs = load_runs(Path("."), variants)          # all inputs checked first
    summary = summarize(runs)                      # checks every eval's icl object too
    icl = {run.name: icl_setup(run) for run in runs}
    text = render(summary, variants, params.report.reference_variant, lineage(runs), icl)
    with atomic_dir(FIGURES) as figures, atomic_dir(PLOT_DATA) as data:
        write_figures(runs, summary, figures, params.report.dpi)
        write_plot_data(runs, summary, data)
    with atomic_path(REPORT) as tmp:
        tmp.write_text(text, encoding="utf-8")
    write_json(SUMMARY, summary)                   # last: its presence means all is written
    best = min(variants, key=lambda v: summary[v]["val_loss"])
    print(f"report: {len(variants)} variants -> {SUMMARY}, {REPORT}, {FIGURES}/, {PLOT_DATA}/; "
          f"lowest val loss {DISPLAY.get(best, best)} {summary[best]['val_loss']:.3f}")


if __name__ == "__main__":
    main()

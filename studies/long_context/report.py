"""Stage report: the study's table, CSVs for `dvc plots show` and PNG figures.

Reads studies/long_context/metrics/eval/*.json, metrics/bench.json and the training
metrics; writes report.md, plots/data/{acc_<variant>,loglik_<variant>,grid_<variant>}.csv
and plots/figures/{accuracy,loglik,heatmap_<variant>,trace}.png.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from nlrepro.errors import NLReproError, cli_main
from nlrepro.io import atomic_path
from nlrepro.model.config import DISPLAY_NAMES
from nlrepro.train.config import run_name
from studies.long_context import config as C

COMMAND = "dvc repro studies/long_context/dvc.yaml"


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _write(path: Path, text: str | bytes) -> None:
    with atomic_path(path) as tmp:
        (tmp.write_bytes if isinstance(text, bytes) else tmp.write_text)(text)


def plot_rows(ev: dict) -> tuple[list[dict], list[dict], list[dict]]:
    g, w = ev["grid"], ev["window"]
    acc = [{"distance": int(d), "distance_w": int(d) / w, "acc": v["acc"], "lo": v["lo"],
            "hi": v["hi"], "n": v["n"]} for d, v in g["acc_by_distance"].items()]
    ll = [{"distance": int(d), "distance_w": int(d) / w, "key_loglik": v["mean"], "se": v["se"]}
          for d, v in g["key_loglik_by_distance"].items()]
    grid = [{"distance": int(d), "depth": float(dp), "acc": c["acc"], "lo": c["lo"], "hi": c["hi"],
             "n": c["n"]} for d, row in g["acc_grid"].items() for dp, c in row.items()]
    return acc, ll, grid


def table(evals: dict[str, dict]) -> str:
    any_ev = next(iter(evals.values()))
    dists, w = any_ev["distances"], any_ev["window"]
    head = "| variant | " + " | ".join(f"{d} ({d / w:g}W)" for d in dists) + " |"
    lines = [head, "|---" * (len(dists) + 1) + "|"]
    for v, ev in evals.items():
        cells = []
        for d in dists:
            c = ev["grid"]["acc_by_distance"][str(d)]
            cells.append(f"{c['acc']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]")
        lines.append(f"| {DISPLAY_NAMES[v]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(evals: dict[str, dict], dpi: int = 110) -> dict[str, bytes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def png(fig) -> bytes:
        buf = io.BytesIO()
        FigureCanvasAgg(fig).print_png(buf)
        return buf.getvalue()

    out = {}
    fig = Figure(figsize=(6.4, 4.0), dpi=dpi)
    ax = fig.add_subplot()
    for v, ev in evals.items():
        acc, _, _ = plot_rows(ev)
        x = [r["distance"] for r in acc]
        ax.plot(x, [r["acc"] for r in acc], marker="o", label=DISPLAY_NAMES[v])
        ax.fill_between(x, [r["lo"] for r in acc], [r["hi"] for r in acc], alpha=0.2)
    w = next(iter(evals.values()))["window"]
    ax.axvline(w, color="grey", ls="--", lw=0.8)
    ax.set(xscale="log", xlabel="distance needle -> answer (tokens; dashed: window W)",
           ylabel="exact retrieval (Wilson 95%)", ylim=(-0.02, 1.02))
    ax.legend()
    out["accuracy.png"] = png(fig)
    fig = Figure(figsize=(6.4, 4.0), dpi=dpi)
    ax = fig.add_subplot()
    for v, ev in evals.items():
        _, ll, _ = plot_rows(ev)
        x = [r["distance"] for r in ll]
        ax.errorbar(x, [r["key_loglik"] for r in ll], yerr=[1.96 * r["se"] for r in ll],
                    marker="o", capsize=3, label=DISPLAY_NAMES[v])
    ax.axvline(w, color="grey", ls="--", lw=0.8)
    ax.set(xscale="log", xlabel="distance (tokens)", ylabel="log-likelihood of the key (nats)")
    ax.legend()
    out["loglik.png"] = png(fig)
    for v, ev in evals.items():
        _, _, grid = plot_rows(ev)
        ds = sorted({r["distance"] for r in grid})
        dps = sorted({r["depth"] for r in grid})
        z = [[next(r["acc"] for r in grid if r["distance"] == d and r["depth"] == dp) for d in ds]
             for dp in dps]
        fig = Figure(figsize=(6.4, 2.8), dpi=dpi)
        ax = fig.add_subplot()
        im = ax.imshow(z, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(ds)), [str(d) for d in ds])
        ax.set_yticks(range(len(dps)), [f"{dp:g}" for dp in dps])
        for i, row in enumerate(z):
            for j, val in enumerate(row):
                ax.text(j, i, f"{val:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if val < 0.5 else "black")
        ax.set(xlabel="distance (tokens)", ylabel="depth", title=f"{DISPLAY_NAMES[v]}: exact retrieval")
        fig.colorbar(im, ax=ax)
        out[f"heatmap_{v}.png"] = png(fig)
    return out


def markdown(evals: dict[str, dict], bench: dict | None, train: dict[str, dict]) -> str:
    any_ev = next(iter(evals.values()))
    w = any_ev["window"]
    parts = [f"# Long-context study: retrieval by distance (window W = {w})", "",
             f"Produced by `{COMMAND}` (docs/LONG_CONTEXT.md). Exact greedy retrieval of a "
             f"5-digit passkey (chance {any_ev['grid']['chance']:.1e}), distance = tokens from "
             f"the needle's start to the answer; {any_ev['samples']} probes per (distance, depth) "
             f"cell, depths {any_ev['depths']} pooled per distance; [Wilson 95% interval].", "",
             "## Accuracy by distance", "", table(evals), "",
             "![accuracy](plots/figures/accuracy.png)", "",
             "## Key log-likelihood by distance (mean, nats)", "",
             "| variant | " + " | ".join(str(d) for d in any_ev["distances"]) + " |",
             "|---" * (len(any_ev["distances"]) + 1) + "|"]
    for v, ev in evals.items():
        ll = ev["grid"]["key_loglik_by_distance"]
        parts.append(f"| {DISPLAY_NAMES[v]} | " + " | ".join(
            f"{ll[str(d)]['mean']:.2f}" for d in ev["distances"]) + " |")
    parts += ["", "![loglik](plots/figures/loglik.png)", "", "## Heatmaps (distance x depth)", ""]
    parts += [f"![{v}](plots/figures/heatmap_{v}.png)" for v in evals]
    parts += ["", "## Target", ""]
    for v, ev in evals.items():
        g = ev["grid"]
        parts.append(f"- {DISPLAY_NAMES[v]}: acc at 4W = {g['acc_at_4w']}, at 16W = {g['acc_at_16w']}, "
                     f"largest distance whose interval is above chance: {g['max_distance_above_chance']}")
    abl = {v: ev for v, ev in evals.items() if "ablation_updates_off" in ev}
    if abl:
        parts += ["", "## Ablation: in-context updates off (teach scale 0, depth 0)", "",
                  "| variant | distance | acc on | acc off | key loglik on | off |", "|---|---|---|---|---|---|"]
        for v, ev in abl.items():
            on, off = ev["ablation_updates_on_same_probes"], ev["ablation_updates_off"]
            for d in ev["distances"]:
                parts.append(f"| {DISPLAY_NAMES[v]} | {d} | {on['acc_by_distance'][str(d)]['acc']:.2f} | "
                             f"{off['acc_by_distance'][str(d)]['acc']:.2f} | "
                             f"{on['key_loglik_by_distance'][str(d)]['mean']:.2f} | "
                             f"{off['key_loglik_by_distance'][str(d)]['mean']:.2f} |")
    if train:
        parts += ["", "## Training", "", "| variant | steps | val loss | train seconds | params |",
                  "|---|---|---|---|---|"]
        for v, m in train.items():
            parts.append(f"| {DISPLAY_NAMES[v]} | {m.get('step', '')} | {m.get('val', {}).get('loss', float('nan')):.3f} | "
                         f"{m.get('train_seconds', float('nan')):.0f} | {m.get('params', '')} |")
    if bench:
        parts += ["", "## Streaming benchmark (bounded memory)", "",
                  "| variant | prompt tokens | peak RSS MB | state MiB | seconds |", "|---|---|---|---|---|"]
        for v in evals:
            for r in bench["runs"].get(v, []):
                parts.append(f"| {DISPLAY_NAMES[v]} | {r['length']} | {r['peak_rss_mb']:.0f} | "
                             f"{r['state_bytes'] / 2**20:.2f} | {r['seconds']:.1f} |")
    return "\n".join(parts) + "\n"


@cli_main
def main(argv: list[str]) -> None:
    params, _ = C.load()
    seed = params.train.seeds[0]
    evals, train = {}, {}
    for v in params.train.variants:
        path = C.METRICS / "eval" / f"{run_name(v, seed)}.json"
        if not path.exists():
            raise NLReproError(f"{path}: not found (run the study's evaluate stage)")
        evals[v] = json.loads(path.read_text())
        tm = C.METRICS / "train" / run_name(v, seed) / "metrics.json"
        if tm.exists():
            train[v] = json.loads(tm.read_text())
    bench_path = C.METRICS / "bench.json"
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else None
    for v, ev in evals.items():
        acc, ll, grid = plot_rows(ev)
        _write(C.OUT / "plots/data" / f"acc_{v}.csv", _csv(acc))
        _write(C.OUT / "plots/data" / f"loglik_{v}.csv", _csv(ll))
        _write(C.OUT / "plots/data" / f"grid_{v}.csv", _csv(grid))
    for name, data in figures(evals).items():
        _write(C.OUT / "plots/figures" / name, data)
    _write(C.OUT / "report.md", markdown(evals, bench, train))
    summary = {v: {"acc_by_distance": {d: c["acc"] for d, c in ev["grid"]["acc_by_distance"].items()},
                   "acc_at_4w": ev["grid"]["acc_at_4w"], "acc_at_16w": ev["grid"]["acc_at_16w"]}
               for v, ev in evals.items()}
    _write(C.METRICS / "summary.json", json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

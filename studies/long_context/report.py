"""Stage report: the study's tables, CSVs for `dvc plots show` and PNG figures, over seeds.

Reads studies/long_context/metrics/eval/<variant>-s<seed>.json for every variant and seed
of ``train``, metrics/bench.json and the training metrics; writes report.md,
plots/data/{acc_<variant>,loglik_<variant>,grid_<variant>}.csv,
plots/figures/{accuracy,loglik,heatmap_<variant>,trace}.png and metrics/summary.json.

Two kinds of uncertainty are kept apart. Within one trained model, accuracy is a binomial
proportion over probes (Wilson 95% interval, per seed). Across training seeds, the
per-seed accuracies are draws of the model itself: mean with the 95% Student-t interval
over seeds (``nlrepro.report.seeds``), clipped to [0, 1]; with one seed the pooled
Wilson interval is shown instead, and the report says no seed interval exists.
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
from nlrepro.report.seeds import SeedStats, seed_stats
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


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def acc_stats(runs: dict[int, dict], distance: int, grid: str = "grid") -> SeedStats:
    """Accuracy at ``distance`` over seeds (``grid``: the main grid or an ablation's)."""
    return seed_stats({s: ev[grid]["acc_by_distance"][str(distance)]["acc"]
                       for s, ev in runs.items()})


def acc_interval(runs: dict[int, dict], distance: int) -> tuple[float, float, float]:
    """(mean, lo, hi): the seed interval with two or more seeds, else the one run's Wilson."""
    st = acc_stats(runs, distance)
    if st.ci_low is not None:
        return st.mean, _clip(st.ci_low), _clip(st.ci_high)
    cell = next(iter(runs.values()))["grid"]["acc_by_distance"][str(distance)]
    return st.mean, cell["lo"], cell["hi"]


def loglik_mean(runs: dict[int, dict], distance: int) -> float:
    return seed_stats({s: ev["grid"]["key_loglik_by_distance"][str(distance)]["mean"]
                       for s, ev in runs.items()}).mean


def plot_rows(runs: dict[int, dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows of the three CSVs of one variant: accuracy by distance (mean, interval, each
    seed), key log-likelihood by distance (mean over seeds), and the distance x depth grid
    (mean over seeds)."""
    first = next(iter(runs.values()))
    w, dists, depths = first["window"], first["distances"], first["depths"]
    acc, ll, grid = [], [], []
    for d in dists:
        mean, lo, hi = acc_interval(runs, d)
        acc.append({"distance": d, "distance_w": d / w, "acc": mean, "lo": lo, "hi": hi,
                    **{f"seed{s}": ev["grid"]["acc_by_distance"][str(d)]["acc"]
                       for s, ev in sorted(runs.items())}})
        ll.append({"distance": d, "distance_w": d / w, "key_loglik": loglik_mean(runs, d)})
        for dp in depths:
            cells = [ev["grid"]["acc_grid"][str(d)][str(float(dp))]["acc"] for ev in runs.values()]
            grid.append({"distance": d, "depth": float(dp), "acc": sum(cells) / len(cells)})
    return acc, ll, grid


def table(evals: dict[str, dict[int, dict]]) -> str:
    """Accuracy by distance per variant: mean over seeds [interval] and each seed's value."""
    first = next(iter(next(iter(evals.values())).values()))
    dists, w = first["distances"], first["window"]
    head = "| variant | " + " | ".join(f"{d} ({d / w:g}W)" for d in dists) + " |"
    lines = [head, "|---" * (len(dists) + 1) + "|"]
    for v, runs in evals.items():
        cells = []
        for d in dists:
            mean, lo, hi = acc_interval(runs, d)
            per_seed = "/".join(f"{ev['grid']['acc_by_distance'][str(d)]['acc']:.2f}"
                                for _, ev in sorted(runs.items()))
            cells.append(f"{mean:.2f} [{lo:.2f}, {hi:.2f}]" +
                         (f" ({per_seed})" if len(runs) > 1 else ""))
        lines.append(f"| {DISPLAY_NAMES[v]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(evals: dict[str, dict[int, dict]]) -> str:
    """Each trained model's accuracy by distance with its Wilson interval over probes."""
    first = next(iter(next(iter(evals.values())).values()))
    dists = first["distances"]
    lines = ["| variant | seed | " + " | ".join(str(d) for d in dists) + " |",
             "|---" * (len(dists) + 2) + "|"]
    for v, runs in evals.items():
        for s, ev in sorted(runs.items()):
            cells = [ev["grid"]["acc_by_distance"][str(d)] for d in dists]
            lines.append(f"| {DISPLAY_NAMES[v]} | {s} | " + " | ".join(
                f"{c['acc']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]" for c in cells) + " |")
    return "\n".join(lines)


def figures(evals: dict[str, dict[int, dict]], dpi: int = 110) -> dict[str, bytes]:
    """accuracy.png (mean over seeds, interval band, each seed's points), loglik.png (mean
    over seeds, each seed's points), one distance x depth heatmap per variant (mean over
    seeds) and trace.png (the first seed of each memory variant along one haystack)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def png(fig) -> bytes:
        buf = io.BytesIO()
        FigureCanvasAgg(fig).print_png(buf)
        return buf.getvalue()

    out = {}
    w = next(iter(next(iter(evals.values())).values()))["window"]
    fig = Figure(figsize=(6.4, 4.0), dpi=dpi)
    ax = fig.add_subplot()
    for v, runs in evals.items():
        acc, _, _ = plot_rows(runs)
        x = [r["distance"] for r in acc]
        line, = ax.plot(x, [r["acc"] for r in acc], marker="o", label=DISPLAY_NAMES[v])
        ax.fill_between(x, [r["lo"] for r in acc], [r["hi"] for r in acc], alpha=0.2,
                        color=line.get_color())
        for s in runs:
            ax.scatter(x, [r[f"seed{s}"] for r in acc], s=10, color=line.get_color(), alpha=0.6)
    ax.axvline(w, color="grey", ls="--", lw=0.8)
    ax.set(xscale="log", xlabel="distance needle -> answer (tokens; dashed: window W)",
           ylabel="exact retrieval (mean; 95% band)", ylim=(-0.02, 1.02))
    ax.legend()
    out["accuracy.png"] = png(fig)
    fig = Figure(figsize=(6.4, 4.0), dpi=dpi)
    ax = fig.add_subplot()
    for v, runs in evals.items():
        _, ll, _ = plot_rows(runs)
        x = [r["distance"] for r in ll]
        line, = ax.plot(x, [r["key_loglik"] for r in ll], marker="o", label=DISPLAY_NAMES[v])
        for ev in runs.values():
            ax.scatter(x, [ev["grid"]["key_loglik_by_distance"][str(d)]["mean"] for d in x], s=10,
                       color=line.get_color(), alpha=0.6)
    ax.axvline(w, color="grey", ls="--", lw=0.8)
    ax.set(xscale="log", xlabel="distance (tokens)", ylabel="log-likelihood of the key (nats)")
    ax.legend()
    out["loglik.png"] = png(fig)
    for v, runs in evals.items():
        _, _, grid = plot_rows(runs)
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
        ax.set(xlabel="distance (tokens)", ylabel="depth",
               title=f"{DISPLAY_NAMES[v]}: exact retrieval, mean of {len(runs)} seed(s)")
        fig.colorbar(im, ax=ax)
        out[f"heatmap_{v}.png"] = png(fig)
    traces = {v: ev["trace"] for v, runs in evals.items()
              for ev in [runs[min(runs)]] if ev.get("trace")}
    if traces:
        fig = Figure(figsize=(6.4, 5.0), dpi=dpi)
        top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
        for v, tr in traces.items():
            rows = tr["rows"]
            pos = [r["pos"] for r in rows]
            # a level reports its update norm only in the pieces where it updated
            for key in sorted({k for r in rows for k in r if k.startswith("update_norm/")}):
                pts = [(r["pos"], r[key]) for r in rows if key in r]
                top.plot([p for p, _ in pts], [x for _, x in pts], marker=".",
                         label=f"{DISPLAY_NAMES[v]} {key[12:]}")
            gates = sorted(k for k in rows[0] if k.startswith("gate/"))
            if gates:
                bottom.plot(pos, [sum(r[k] for k in gates) / len(gates) for r in rows],
                            label=DISPLAY_NAMES[v])
            for ax in (top, bottom):
                ax.axvline(tr["fact_pos"], color="grey", ls="--", lw=0.8)
        top.set(yscale="log", ylabel="update norm")
        top.legend(fontsize=6)
        bottom.set(xlabel="position in the haystack (tokens; dashed: the fact)",
                   ylabel="mean memory gate")
        bottom.legend(fontsize=6)
        out["trace.png"] = png(fig)
    return out


def _target_line(v: str, runs: dict[int, dict]) -> str:
    g0 = next(iter(runs.values()))["grid"]
    w, chance = g0["window"], g0["chance"]
    parts = []
    for mult in (4, 16):
        d = mult * w
        if str(d) not in g0["acc_by_distance"]:
            continue
        st = acc_stats(runs, d)
        above = sum(1 for ev in runs.values() if ev["grid"]["acc_by_distance"][str(d)]["lo"] > chance)
        parts.append(f"acc at {mult}W = {st.mean:.2f} (seeds: "
                     + ", ".join(f"{x:.2f}" for _, x in sorted(st.values.items()))
                     + f"; {above}/{len(runs)} above chance)")
    far = [ev["grid"]["max_distance_above_chance"] for _, ev in sorted(runs.items())]
    return f"- {DISPLAY_NAMES[v]}: " + "; ".join(parts) + \
        f"; largest distance whose Wilson interval is above chance, per seed: {far}"


def markdown(evals: dict[str, dict[int, dict]], bench: dict | None,
             train: dict[str, dict[int, dict]]) -> str:
    first = next(iter(next(iter(evals.values())).values()))
    w, dists = first["window"], first["distances"]
    seeds = sorted({s for runs in evals.values() for s in runs})
    spread = (f"mean over {len(seeds)} training seeds {seeds} with the 95% Student-t interval "
              "over seeds (clipped to [0, 1]), each seed's value in parentheses"
              if len(seeds) > 1 else
              f"one training seed ({seeds[0]}): no interval over seeds exists; the interval "
              "shown is the Wilson 95% interval over probes")
    parts = [f"# Long-context study: retrieval by distance (window W = {w})", "",
             f"Produced by `{COMMAND}` (docs/LONG_CONTEXT.md). Exact greedy retrieval of a "
             f"5-digit passkey (chance {first['grid']['chance']:.1e}), distance = tokens from "
             f"the needle's start to the answer; {first['samples']} probes per (distance, depth) "
             f"cell, depths {first['depths']} pooled per distance.", "",
             "## Accuracy by distance", "", f"Cells: {spread}.", "", table(evals), "",
             "![accuracy](plots/figures/accuracy.png)", "",
             "## Accuracy by distance, each trained model", "",
             "[Wilson 95% interval over its probes]", "", per_seed_table(evals), "",
             "## Key log-likelihood by distance (nats, mean over seeds)", "",
             "| variant | " + " | ".join(str(d) for d in dists) + " |",
             "|---" * (len(dists) + 1) + "|"]
    for v, runs in evals.items():
        parts.append(f"| {DISPLAY_NAMES[v]} | " + " | ".join(
            f"{loglik_mean(runs, d):.2f}" for d in dists) + " |")
    parts += ["", "![loglik](plots/figures/loglik.png)", "",
              "## Heatmaps (distance x depth, mean over seeds)", ""]
    parts += [f"![{v}](plots/figures/heatmap_{v}.png)" for v in evals]
    parts += ["", "## Target (memory >= 0.5 at 4W and above chance at 16W)", ""]
    parts += [_target_line(v, runs) for v, runs in evals.items()]
    abl = {v: runs for v, runs in evals.items()
           if all("ablation_updates_off" in ev for ev in runs.values())}
    if abl:
        parts += ["", "## Ablation: in-context updates off (teach scale 0, depth 0; mean over seeds)",
                  "", "| variant | distance | acc on | acc off | key loglik on | off |",
                  "|---|---|---|---|---|---|"]
        for v, runs in abl.items():
            for d in dists:
                on = acc_stats(runs, d, "ablation_updates_on_same_probes").mean
                off = acc_stats(runs, d, "ablation_updates_off").mean
                ll = {k: seed_stats({s: ev[k]["key_loglik_by_distance"][str(d)]["mean"]
                                     for s, ev in runs.items()}).mean
                      for k in ("ablation_updates_on_same_probes", "ablation_updates_off")}
                parts.append(f"| {DISPLAY_NAMES[v]} | {d} | {on:.2f} | {off:.2f} | "
                             f"{ll['ablation_updates_on_same_probes']:.2f} | "
                             f"{ll['ablation_updates_off']:.2f} |")
        parts += ["", "![trace](plots/figures/trace.png)"]
    if train:
        parts += ["", "## Training (mean over seeds)", "",
                  "| variant | seeds | steps | val loss | train seconds | params |",
                  "|---|---|---|---|---|---|"]
        for v, runs in train.items():
            loss = seed_stats({s: m["val"]["loss"] for s, m in runs.items()})
            secs = seed_stats({s: m["train_seconds"] for s, m in runs.items()})
            any_m = next(iter(runs.values()))
            sd = f" +- {loss.std:.3f}" if loss.std is not None else ""
            parts.append(f"| {DISPLAY_NAMES[v]} | {len(runs)} | {any_m.get('step', '')} | "
                         f"{loss.mean:.3f}{sd} | {secs.mean:.0f} | {int(any_m.get('params', 0)):,} |")
    if bench:
        parts += ["", "## Streaming benchmark (bounded memory)", "",
                  "| variant | prompt tokens | peak RSS MB | state MiB | seconds |", "|---|---|---|---|---|"]
        for v in evals:
            for r in bench["runs"].get(v, []):
                parts.append(f"| {DISPLAY_NAMES[v]} | {r['length']} | {r['peak_rss_mb']:.0f} | "
                             f"{r['state_bytes'] / 2**20:.2f} | {r['seconds']:.1f} |")
    return "\n".join(parts) + "\n"


def summary(evals: dict[str, dict[int, dict]]) -> dict:
    """metrics/summary.json: per variant and distance the mean and each seed's accuracy
    (and the seed interval with two or more seeds), and the target's two distances."""
    out = {}
    for v, runs in evals.items():
        first = next(iter(runs.values()))
        w = first["window"]
        out[v] = {"acc_by_distance": {str(d): acc_stats(runs, d).as_json()
                                      for d in first["distances"]}}
        for mult in (4, 16):
            if str(mult * w) in first["grid"]["acc_by_distance"]:
                out[v][f"acc_at_{mult}w"] = acc_stats(runs, mult * w).as_json()
    return out


@cli_main
def main(argv: list[str]) -> None:
    params, _ = C.load()
    evals: dict[str, dict[int, dict]] = {}
    train: dict[str, dict[int, dict]] = {}
    for v in params.train.variants:
        for seed in params.train.seeds:
            path = C.METRICS / "eval" / f"{run_name(v, seed)}.json"
            if not path.exists():
                raise NLReproError(f"{path}: not found (run the study's evaluate stage)")
            evals.setdefault(v, {})[seed] = json.loads(path.read_text())
            tm = C.METRICS / "train" / run_name(v, seed) / "metrics.json"
            if tm.exists():
                train.setdefault(v, {})[seed] = json.loads(tm.read_text())
    bench_path = C.METRICS / "bench.json"
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else None
    for v, runs in evals.items():
        acc, ll, grid = plot_rows(runs)
        _write(C.OUT / "plots/data" / f"acc_{v}.csv", _csv(acc))
        _write(C.OUT / "plots/data" / f"loglik_{v}.csv", _csv(ll))
        _write(C.OUT / "plots/data" / f"grid_{v}.csv", _csv(grid))
    for name, data in figures(evals).items():
        _write(C.OUT / "plots/figures" / name, data)
    _write(C.OUT / "report.md", markdown(evals, bench, train))
    _write(C.METRICS / "summary.json", json.dumps(summary(evals), indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

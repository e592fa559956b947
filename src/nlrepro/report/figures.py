"""PNG figures of the comparison (plots/figures/*.png), drawn with matplotlib's object API
(no pyplot global state), each variant in the same colour in every figure.

* ``loss.png``         - training loss (solid) and validation loss (dashed, dots) of all
                         variants on one axis;
* ``teach.png``        - the teach scale in force at each step, and the norm of each
                         memory level's in-context update (log scale);
* ``scores.png``       - accuracy of every task as grouped bars, a black line at chance;
* ``long_context.png`` - passkey retrieval by prompt length, and by length x depth;
* ``icl_by_position.png`` - validation loss by token position with the in-context updates
                         on (solid) and off (dashed);
* ``seeds.png``        - the headline metrics seed by seed (points) with the mean and its
                         95% Student-t interval (black), per variant.

With several seeds the curves are the mean over seeds (``collect.average_runs``); the
spread is in ``seeds.png`` and in the report's tables.

PNG metadata is fixed so the same inputs give the same bytes.
"""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nlrepro.io import atomic_path
from nlrepro.report.collect import (DISPLAY, VariantRun, icl_by_position, passkey_by_length,
                                    passkey_grid, zero_shot_label)
from nlrepro.report.seeds import FIGURE_METRICS

# Vega-Lite's default palette in the order it assigns it (series sorted by name), so the
# PNGs and the `dvc plots show` page colour each variant alike.
COLORS = {"hope": "#4c78a8", "titan": "#f58518", "transformer": "#e45756"}
LEVEL_STYLES = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3))]
# (summary key, bar label) of the offline accuracies drawn in scores.png.
OFFLINE_SCORES = [("choice_acc", "real vs distractor\nacc"),
                  ("choice_acc_norm", "real vs distractor\nacc_norm"),
                  ("last_word_acc", "last word\nacc"),
                  ("passkey_acc", "passkey\nacc")]


def _color(variant: str) -> str:
    return COLORS.get(variant, "#2ca02c")


def _save(fig: Figure, path: Path, dpi: int) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})


def loss_figure(runs: list[VariantRun]) -> Figure:
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for run in runs:
        c, name = _color(run.name), DISPLAY.get(run.name, run.name)
        ax.plot(*run.curve("train", "loss"), color=c, lw=1.4, label=f"{name} train")
        ax.plot(*run.curve("val", "loss"), color=c, lw=1.2, ls="--", marker="o", ms=4,
                label=f"{name} val")
    ax.set(xlabel="optimizer step", ylabel="cross-entropy (nats/token)",
           title="Loss of every variant")
    ax.grid(alpha=0.3)
    ax.legend(ncols=2, fontsize=8)
    return fig


def teach_figure(runs: list[VariantRun]) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_scale, ax_norm = fig.subplots(1, 2)
    memory_runs = [r for r in runs if r.update_norm_levels()]
    for run in memory_runs or runs:
        ax_scale.plot(*run.curve("train", "teach_scale"), color=_color(run.name), lw=1.5,
                      label=DISPLAY.get(run.name, run.name))
    ax_scale.set(xlabel="optimizer step", ylabel="teach scale",
                 title="Teach scale in force (warmup / decay schedule)")
    any_norm = False
    for run in memory_runs:
        for i, level in enumerate(run.update_norm_levels()):
            steps, norms = run.curve("train", f"update_norm/{level}")
            pts = [(s, n) for s, n in zip(steps, norms) if math.isfinite(n) and n > 0]
            if pts:
                any_norm = True
                ax_norm.plot(*zip(*pts), color=_color(run.name),
                             ls=LEVEL_STYLES[i % len(LEVEL_STYLES)], lw=1.3,
                             label=f"{DISPLAY.get(run.name, run.name)} {level}")
    if any_norm:
        ax_norm.set_yscale("log")
    _legend_or_note(ax_norm, any_norm, "no memory variant trained", fontsize=7)
    ax_norm.set(xlabel="optimizer step", ylabel="update norm (after clipping)",
                title="In-context memory update norm per level")
    for ax in (ax_scale, ax_norm):
        ax.grid(alpha=0.3)
    ax_scale.legend(fontsize=8)
    return fig


def score_columns(summary: dict, variants: list[str]) -> list[tuple[str, str]]:
    """(summary key, label) of every accuracy drawn as bars: the offline suite, then each
    zero-shot accuracy."""
    cols = [(k, label) for k, label in OFFLINE_SCORES if any(k in summary[v] for v in variants)]
    zs = sorted({k for v in variants for k in summary[v]
                 if k.startswith("zs_") and k.endswith(("_acc", "_acc_norm", "average_accuracy"))})
    return cols + [(k, zero_shot_label(k).replace(" ", "\n")) for k in zs]


def scores_figure(summary: dict, variants: list[str]) -> Figure:
    cols = score_columns(summary, variants)
    fig = Figure(figsize=(max(6.5, 1.5 * len(cols) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(variants), 1)
    for j, v in enumerate(variants):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(cols))]
        ys = [summary[v].get(k, math.nan) for k, _ in cols]
        ax.bar(xs, ys, width=width * 0.95, color=_color(v), label=DISPLAY.get(v, v))
    for i, (k, _) in enumerate(cols):
        c = summary["chance"].get(k)
        if c is not None:
            ax.hlines(c, i - 0.45, i + 0.45, color="black", lw=1.6,
                      label="chance" if i == 0 else None)
    ax.set_xticks(range(len(cols)), [label for _, label in cols], fontsize=8)
    ax.set(ylabel="accuracy", ylim=(0, 1), title="Scores of every variant; black line = chance")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def long_context_figure(runs: list[VariantRun], chance: float | None) -> Figure:
    fig = Figure(figsize=(4.2 * (len(runs) + 1), 3.8), layout="constrained")
    axes = fig.subplots(1, len(runs) + 1, squeeze=False)[0]
    ax = axes[0]
    ticks: set[int] = set()
    for i, run in enumerate(runs):
        lengths, acc = passkey_by_length(run)
        ticks.update(lengths)
        # Markers shrink per variant so equal accuracies stay visible on top of each other.
        ax.plot(lengths, acc, color=_color(run.name), marker="osD^v"[i % 5], ms=9 - 2 * (i % 3),
                label=DISPLAY.get(run.name, run.name))
    if chance is not None:
        ax.axhline(chance, color="black", lw=1, ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [str(n) for n in sorted(ticks)])
    ax.minorticks_off()
    ax.set(xlabel="prompt length (tokens)", ylabel="passkey accuracy", ylim=(-0.02, 1.02),
           title="Passkey retrieval by length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    image = None
    for ax, run in zip(axes[1:], runs):
        lengths, depths, acc = passkey_grid(run)
        if not lengths:
            ax.set_axis_off()
            continue
        image = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
        ax.set_yticks(range(len(lengths)), [str(n) for n in lengths])
        ax.set(xlabel="needle depth", ylabel="length", title=DISPLAY.get(run.name, run.name))
        for i, row in enumerate(acc):
            for j, a in enumerate(row):
                ax.text(j, i, f"{a:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if a < 0.5 else "black")
    if image is not None:
        fig.colorbar(image, ax=list(axes[1:]), shrink=0.8, label="accuracy")
    return fig


def _legend_or_note(ax, drawn: bool, note: str, fontsize: int) -> None:
    """A two-column legend when something was drawn, else ``note`` in the middle."""
    if drawn:
        ax.legend(fontsize=fontsize, ncols=2)
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)


def icl_figure(runs: list[VariantRun]) -> Figure:
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    for run in runs:
        c, name = _color(run.name), DISPLAY.get(run.name, run.name)
        for kind, (mids, losses) in icl_by_position(run).items():
            drawn = True
            ax.plot(mids, losses, color=c, lw=1.4, ls="-" if kind == "on" else "--",
                    marker="o" if kind == "on" else None, ms=3, label=f"{name} {kind}")
    _legend_or_note(ax, drawn, "in-context learning not measured", fontsize=8)
    ax.set(xlabel="token position (bucket midpoint)", ylabel="cross-entropy (nats/token)",
           title="Loss by position: in-context updates on (solid) / off (dashed)")
    ax.grid(alpha=0.3)
    return fig


def seeds_figure(aggregated: dict, variants: list[str]) -> Figure:
    """One panel per headline metric: every seed as a point, the mean with its 95%
    Student-t interval as a black bar (the mean alone with one seed)."""
    metrics = [(m, label) for m, label in FIGURE_METRICS
               if any(m in aggregated[v] for v in variants)]
    fig = Figure(figsize=(3.3 * max(len(metrics), 1), 3.8), layout="constrained")
    axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)[0]
    for ax, (metric, label) in zip(axes, metrics):
        for i, v in enumerate(variants):
            stat = aggregated[v].get(metric)
            if stat is None:
                continue
            seeds = sorted(int(k[4:]) for k in stat if k.startswith("seed"))
            offsets = [0.0] if len(seeds) == 1 else [
                -0.15 + 0.3 * j / (len(seeds) - 1) for j in range(len(seeds))]
            ax.scatter([i + o for o in offsets], [stat[f"seed{s}"] for s in seeds],
                       color=_color(v), s=22, zorder=3)
            if "ci95_low" in stat:
                ax.errorbar([i + 0.3], [stat["mean"]], yerr=[[stat["mean"] - stat["ci95_low"]],
                            [stat["ci95_high"] - stat["mean"]]], color="black", capsize=4,
                            marker="_", ms=12, lw=1.3)
            else:
                ax.plot([i + 0.3], [stat["mean"]], color="black", marker="_", ms=12)
        ax.set_xticks(range(len(variants)), [DISPLAY.get(v, v) for v in variants], fontsize=8)
        ax.set_xlim(-0.5, len(variants) - 0.3)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    n = aggregated.get("seeds", {}).get("n", 1)
    fig.suptitle(f"{n} seed{'s' if n != 1 else ''} per variant: points = seeds, black = mean"
                 + (" and 95% Student-t interval" if n > 1 else " (one seed: no interval)"),
                 fontsize=10)
    return fig


# File name (without .png) -> title, in the order report.md shows them.
FIGURES = {"loss": "Loss curves", "teach": "Teach scale and memory update norms",
           "scores": "Scores with chance", "long_context": "Long-context accuracy",
           "icl_by_position": "In-context learning: loss by position, updates on / off",
           "seeds": "Seeds: every seed, the mean and its interval"}


def write_figures(runs: list[VariantRun], summary: dict, out_dir: Path, dpi: int,
                  aggregated: dict) -> list[Path]:
    """``runs``: one per variant (the mean over seeds); ``summary``: the flat means;
    ``aggregated``: metrics/summary.json (per seed)."""
    variants = [r.name for r in runs]
    figures = {
        "loss": loss_figure(runs),
        "teach": teach_figure(runs),
        "scores": scores_figure(summary, variants),
        "long_context": long_context_figure(runs, summary["chance"].get("passkey_acc")),
        "icl_by_position": icl_figure(runs),
        "seeds": seeds_figure(aggregated, variants),
    }
    paths = []
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        _save(fig, path, dpi)
        paths.append(path)
    return paths

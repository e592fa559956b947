"""The markdown comparison of the variants (metrics/report.md).

One column per variant and one for chance (a uniform guess on the same metric), so every
score is read against what it would be by luck. Rows the summary lacks (a zero-shot task
that was not run) are left out rather than shown empty.
"""
from __future__ import annotations

import math
from typing import Any

from nlrepro.report.collect import DISPLAY, IclSetup, zero_shot_label
from nlrepro.report.figures import FIGURES
from nlrepro.report.seeds import HEADLINE, lower_is_better, t_quantile

# (summary name, row label, format). Format "g3" = 3 significant digits, "si" = 1.33M,
# "pct" = a share as a percentage, "yesno" = a 1/0 flag.
TRAINING_ROWS = [
    ("params", "parameters", "si"),
    ("tokens_seen", "tokens seen", "si"),
    ("steps", "optimizer steps", "int"),
    ("val_loss", "val loss (nats/token)", "f3"),
    ("val_ppl", "val perplexity", "f1"),
    ("skipped_steps", "skipped steps (non-finite)", "int"),
    ("max_update_norm", "max memory update norm", "f3"),
    ("teach_scale_final", "teach scale at the end", "g3"),
]
OFFLINE_ROWS = [
    ("ppl_token", "test perplexity / token", "f1"),
    ("bits_per_byte", "test bits / byte", "f3"),
    ("last_word_acc", "last word acc", "f3"),
    ("last_word_ppl", "last word perplexity", "f1"),
    ("choice_acc", "real-vs-distractor acc", "f3"),
    ("choice_acc_norm", "real-vs-distractor acc_norm", "f3"),
    ("passkey_acc", "passkey acc (all lengths)", "f3"),
]


def fmt(value: Any, style: str) -> str:
    if value is None:
        return ""
    value = float(value)
    if not math.isfinite(value):
        return f"**{value}**"  # a NaN or inf is the news of the table: make it stand out
    if style == "int":
        return f"{value:,.0f}"
    if style == "si":
        for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f}{unit}"
        return f"{value:.0f}"
    if style == "g3":
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if style == "pct":
        return "<0.1%" if 0 < abs(value) < 0.0005 else f"{100 * value:.1f}%"
    if style == "yesno":
        return "yes" if value else "no"
    if style.startswith("f"):
        return f"{value:.{int(style[1:])}f}"
    raise ValueError(style)


def _rows(summary: dict, variants: list[str], rows: list[tuple[str, str, str]],
          chance: bool = True, spread: dict | None = None) -> list[str]:
    """One row per metric the summary has; ``spread`` ({variant: {metric: sd}}) adds
    ``± sd`` to a cell whose metric was measured over several seeds."""
    out = []
    for key, label, style in rows:
        if not any(key in summary[v] for v in variants):
            continue
        cells = [fmt(summary[v].get(key), style) + _pm((spread or {}).get(v, {}).get(key), style)
                 for v in variants]
        if chance:
            c = summary["chance"].get(key)
            cells.append(fmt(c, "g3") if c is not None else "")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def _pm(sd: float | None, style: str) -> str:
    if sd is None or not math.isfinite(sd) or style in ("int", "si", "yesno"):
        return ""
    return f" ± {fmt(sd, style)}"


def _seed_list(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def headline_rows(aggregated: dict, variants: list[str]) -> list[tuple[str, str]]:
    """(metric, label) of the seed tables: the headline metrics any variant has, then the
    zero-shot accuracies."""
    rows = [(m, label) for m, label in HEADLINE if any(m in aggregated[v] for v in variants)]
    zs = sorted({k for v in variants for k in aggregated[v]
                 if k.startswith("zs_") and k.endswith(("_acc", "_acc_norm"))})
    return rows + [(k, zero_shot_label(k)) for k in zs]


def _perplexity(metric: str) -> bool:
    return "ppl" in metric or "perplexity" in metric


def _num(x: float, signed: bool = False, big: bool = False) -> str:
    """3 decimals, 1 for perplexity-sized numbers; ``+`` on differences."""
    return f"{x:{'+' if signed else ''}.{1 if big else 3}f}"


def _interval(stat: dict, signed: bool = False, big: bool = False) -> str:
    if "ci95_low" not in stat:
        return "none (1 seed)"
    return f"[{_num(stat['ci95_low'], signed, big)}, {_num(stat['ci95_high'], signed, big)}]"


def _verdict(metric: str, stat: dict) -> str:
    """Whether the paired interval excludes 0, and on which side."""
    if "ci95_low" not in stat:
        return "no interval"
    lo, hi = stat["ci95_low"], stat["ci95_high"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "not resolved"
    if lo == hi == 0:
        return "tie"
    if lo <= 0 <= hi:
        return "not resolved"
    better = (hi < 0) if lower_is_better(metric) else (lo > 0)
    return "better" if better else "worse"


def seeds_section(aggregated: dict, variants: list[str], reference: str) -> list[str]:
    """Every seed, the mean, sd and 95% Student-t interval of the headline metrics, and
    each variant's paired difference against the reference variant."""
    seeds = sorted({int(k[4:]) for v in variants for stat in aggregated[v].values()
                    for k in stat if k.startswith("seed")})
    n = len(seeds)
    lines = ["", "## Seeds and intervals", ""]
    if n < 2:
        lines += [f"One training seed ({_seed_list(seeds)}): no interval exists, and a "
                  "difference between variants cannot be told from seed-to-seed or "
                  "machine-to-machine noise (docs/REPORT.md, \"Noise\"). "
                  "`dvc exp run -S 'train.seeds=[0,1,2]'` adds seeds and reruns only their "
                  "stages (three seeds of the defaults, measured: docs/RESULTS.md).", ""]
    else:
        lines += [f"Training seeds {_seed_list(seeds)} (model init and data order; the data "
                  f"and the evaluation items are the same for every seed). Interval: 95% "
                  f"Student t over the seeds, mean ± {t_quantile(n):.2f} sd / sqrt({n}).", ""]
    lines += ["| metric | variant | mean | sd | 95% interval | "
              + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|---|---:|---:|---:|" + "---:|" * n]
    rows = headline_rows(aggregated, variants)
    for metric, label in rows:
        big = _perplexity(metric)
        for v in variants:
            stat = aggregated[v].get(metric)
            if stat is None:
                continue
            sd = _num(stat["std"], big=big) if "std" in stat else ""
            per = [_num(stat[f"seed{s}"], big=big) if f"seed{s}" in stat else "" for s in seeds]
            lines.append(f"| {label} | {DISPLAY.get(v, v)} | {_num(stat['mean'], big=big)} | "
                         f"{sd} | {_interval(stat, big=big)} | " + " | ".join(per) + " |")
    paired = aggregated.get("paired", {})
    if not paired:
        return lines
    ref = DISPLAY.get(reference, reference)
    lines += ["", "### Paired differences", "",
              f"Each variant minus {ref} (the reference), then the other pairs, seed by seed "
              "(the same seed and evaluation items on both sides); *wins*: seeds in which the "
              "first is better. *better* / *worse*: the 95% interval excludes 0; *not "
              "resolved*: it does not; *tie*: every difference is 0.", "",
              "| metric | difference | mean | 95% interval | wins | verdict |",
              "|---|---|---:|---:|---:|---|"]
    for metric, label in rows:
        for pair, metrics in paired.items():
            stat = metrics.get(metric)
            if stat is None:
                continue
            a, b = pair.split("-", 1)
            big = _perplexity(metric)
            lines.append(f"| {label} | {DISPLAY.get(a, a)} - {DISPLAY.get(b, b)} | "
                         f"{_num(stat['mean'], True, big)} | {_interval(stat, True, big)} | "
                         f"{stat['wins']:.0f}/{stat['n']:.0f} | {_verdict(metric, stat)} |")
    return lines


ICL_ROWS = [
    ("icl_loss_on", "loss, updates on (nats/token)", "f3"),
    ("icl_loss_off", "loss, updates off (nats/token)", "f3"),
    ("icl_gain", "gain (off - on)", "f3"),
    ("icl_gain_second_half", "gain on the second half", "f3"),
]
STREAM_ROWS = [
    ("stream_max_ratio", "stream: max fast-weight norm / start", "g3"),
    ("stream_min_ratio", "stream: min fast-weight norm / start", "g3"),
    ("stream_finite", "stream: finite", "yesno"),
]
NOT_MEASURED = "not measured"


def _header(first: str, variants: list[str], chance: bool = True) -> list[str]:
    names = [DISPLAY.get(v, v) for v in variants] + (["chance"] if chance else [])
    return [f"| {first} | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names)]


def _zero_shot_rows(summary: dict, variants: list[str]) -> list[tuple[str, str, str]]:
    keys = sorted({k for v in variants for k in summary[v] if k.startswith("zs_")})
    return [(k, zero_shot_label(k),
             "f3" if k.endswith(("acc", "acc_norm", "accuracy", "bits_per_byte")) else "f2")
            for k in keys]


def throughput_rows(summary: dict, variants: list[str], reference: str) -> list[str]:
    cells = []
    ref = summary.get(reference, {}).get("tokens_per_s")
    for v in variants:
        tps = summary[v]["tokens_per_s"]
        ratio = f" ({tps / ref:.2f}x)" if ref and math.isfinite(tps) else ""
        cells.append(fmt(tps, "int") + ratio)
    secs = [fmt(summary[v].get("train_seconds"), "int") for v in variants]
    return [f"| train tokens/s (x {DISPLAY.get(reference, reference)}) | " + " | ".join(cells) + " | |",
            "| train wall seconds | " + " | ".join(secs) + " | |"]


def _icl_rows(summary: dict, variants: list[str], rows: list[tuple[str, str, str]],
              measured: dict[str, bool]) -> list[str]:
    """Rows without a chance column; a variant whose source was not measured says so, one
    that lacks only this row (no such mechanism or guard) is left empty."""
    out = []
    for key, label, style in rows:
        cells = [fmt(summary[v][key], style) if key in summary[v]
                 else "" if measured[v] else NOT_MEASURED for v in variants]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def _icl_scope(setups: dict[str, IclSetup], variants: list[str]) -> str:
    """"16 sequences of 1024 validation tokens", per variant when they differ."""
    groups: dict[tuple[int, int], list[str]] = {}
    for v in variants:
        if setups[v].measured:
            groups.setdefault((setups[v].sequences, setups[v].length), []).append(v)
    parts = [f"{n} sequences of {length} validation tokens" for n, length in groups]
    if len(groups) > 1:
        parts = [f"{p} ({', '.join(DISPLAY.get(v, v) for v in vs)})"
                 for p, vs in zip(parts, groups.values())]
    return "; ".join(parts)


def icl_section(summary: dict, variants: list[str], setups: dict[str, IclSetup]) -> list[str]:
    """The "In-context learning" section: what the in-context updates are worth."""
    lines = ["", "## In-context learning", ""]
    scope = _icl_scope(setups, variants)
    lines += ['Loss with the in-context updates (memory, self-modification, CMS) "on" at the '
              'evaluation teach scale and "off" (every fast weight frozen at its slow initial '
              'value, teach scale 0); gains are off - on (or one mechanism frozen - on) in '
              'nats/token, > 0 when the updates help, '
              + (f"over {scope}." if scope else "but no variant's evaluation measured them "
                 "(no `icl` in metrics/eval/<variant>.json; rerun `dvc repro evaluate`)."), ""]
    lines += _header("in-context learning", variants, chance=False)
    lines.append("| attention | " + " | ".join(setups[v].attention or "not recorded"
                                                for v in variants) + " |")
    icl = {v: setups[v].measured for v in variants}
    mechanisms = list(dict.fromkeys(m for v in variants for m in setups[v].mechanisms))
    rows = ICL_ROWS + [(f"icl_gain_{m}", f"gain of {m}", "f3") for m in mechanisms] + STREAM_ROWS
    lines += _icl_rows(summary, variants, rows, icl)

    def guards(prefix: str) -> list[str]:
        return sorted({k[len(prefix):] for v in variants for k in summary[v]
                       if k.startswith(prefix)})

    lines += _icl_rows(summary, variants, [
        (f"train_clip_rate_{g}", f"guard binding in training: {g}", "pct")
        for g in guards("train_clip_rate_")], {v: setups[v].train_guards for v in variants})
    lines += _icl_rows(summary, variants, [
        (f"clip_rate_{g}", f"guard binding in evaluation: {g}", "pct")
        for g in guards("clip_rate_")], icl)
    return lines


def render(summary: dict, variants: list[str], reference: str, lineage: dict[str, Any],
           icl: dict[str, IclSetup] | None = None, aggregated: dict | None = None) -> str:
    """The whole report.md: main table, seeds and paired differences, long-context table,
    in-context learning, figures, provenance. ``summary`` is the flat view (the mean over
    seeds); ``aggregated`` is metrics/summary.json (per seed, sd, intervals; without it the
    seeds section is left out). Without ``icl`` (variant -> IclSetup) that section is left
    out."""
    n = (aggregated or {}).get("seeds", {}).get("n", 1)
    spread = ({v: {m: s["std"] for m, s in aggregated[v].items() if "std" in s}
               for v in variants} if aggregated else None)
    lines = ["# " + " vs ".join(DISPLAY.get(v, v) for v in variants), "",
             "Written by the `report` stage (`dvc repro report`) from metrics/train/* and "
             "metrics/eval/*; numbers also in `metrics/summary.json`. *chance* is what a "
             "uniform guess scores on the same metric (perplexity: the vocabulary size).", ""]
    lines += ["## Training and held-out evaluation", ""]
    lines += [f"Mean ± sd over {n} training seeds (intervals in \"Seeds and intervals\")."
              if n > 1 else "One training seed: single values, no spread (see \"Seeds and "
              "intervals\").", ""]
    lines += _header("metric", variants)
    lines += _rows(summary, variants, TRAINING_ROWS, spread=spread)
    lines += throughput_rows(summary, variants, reference)
    lines += _rows(summary, variants, OFFLINE_ROWS, spread=spread)
    if aggregated is not None:
        lines += seeds_section(aggregated, variants, reference)
    zs = _zero_shot_rows(summary, variants)
    lines += ["", "## Zero-shot tasks", ""]
    if zs:
        lines += _header("task metric", variants) + _rows(summary, variants, zs)
    else:
        lines += ["No zero-shot task was configured (`eval.tasks` in params.yaml; "
                  "docs/EVAL_TASKS.md)."]
    lengths = sorted({int(k.rsplit("len", 1)[1]) for v in variants for k in summary[v]
                      if k.startswith("passkey_acc_len")})
    if lengths:
        lines += ["", "## Long context: passkey retrieval accuracy by prompt length (tokens)", ""]
        lines += _header("length", variants)
        lines += _rows(summary, variants,
                       [(f"passkey_acc_len{n}", f"{n}", "f3") for n in lengths])
        lines += ["", "Mean log-likelihood of the 5 passkey digits (teacher-forced; higher is "
                  "better; it moves before accuracy does; chance = log 1/90,000, a uniform guess over the "
                  "5-digit keys):", ""]
        lines += _header("length", variants)
        lines += _rows(summary, variants,
                       [(f"passkey_key_loglik_len{n}", f"{n}", "f2") for n in lengths])
    if icl is not None:
        lines += icl_section(summary, variants, icl)
    lines += ["", "## Figures", ""]
    for name, title in FIGURES.items():
        lines.append(f"![{title}](../plots/figures/{name}.png)")
    lines += ["", "## Provenance", ""]
    lines += [f"- {k}: {v}" for k, v in lineage.items()]
    return "\n".join(lines) + "\n"

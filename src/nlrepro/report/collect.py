"""Read every run's training and evaluation outputs into one comparison.

A run is one (variant, training seed), named ``<variant>-s<seed>`` (``hope-s0``). Inputs
per run (written by the train and evaluate stages):

* ``metrics/train/<run>/metrics.json`` - the end-of-run summary;
* ``metrics/train/<run>/log.jsonl``    - the durable per-step log (curves);
* ``metrics/eval/<run>.json``          - the offline suite, the in-context learning
  measurement (``icl``, optional: older results lack it) and zero-shot tasks.

``summarize`` turns them into flat numbers per run: metric names (``val_loss``,
``choice_acc``, ``zs_piqa_acc`` ...) -> value, plus a ``chance`` mapping with what a
uniform guess scores on the same names; ``report.seeds.aggregate`` then writes
``metrics/summary.json`` with the per-seed values and their mean, sd and interval under
``<variant>.<metric>.<stat>`` (``hope.val_loss.mean``), one name per metric for
``dvc metrics show/diff`` and the regression gate.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlrepro.errors import NLReproError
from nlrepro.model.config import DISPLAY_NAMES
from nlrepro.train.config import run_name

DISPLAY = DISPLAY_NAMES
# Offline-suite metrics: (summary name, task, key in the eval json).
OFFLINE = [
    ("ppl_token", "perplexity", "token_perplexity"),
    ("bits_per_byte", "perplexity", "bits_per_byte"),
    ("last_word_acc", "last_word", "acc"),
    ("last_word_ppl", "last_word", "perplexity"),
    ("choice_acc", "choice", "acc"),
    ("choice_acc_norm", "choice", "acc_norm"),
    ("passkey_acc", "passkey", "acc"),
]
# Chance keys of the offline suite that differ from the metric key.
_OFFLINE_CHANCE = {("perplexity", "token_perplexity"): "token_perplexity",
                   ("last_word", "perplexity"): "perplexity"}


@dataclass
class VariantRun:
    """What the train and evaluate stages wrote for one run: ``name`` is the variant,
    ``seed`` the training seed (None for a mean over seeds, ``average_runs``)."""

    name: str
    train: dict[str, Any]
    log: list[dict[str, Any]]
    eval: dict[str, Any]
    seed: int | None = 0

    @property
    def run(self) -> str:
        """``hope-s0``: the directory and file names of this run's outputs."""
        return self.name if self.seed is None else run_name(self.name, self.seed)

    def curve(self, kind: str, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one logged metric; a value logged as null reads as NaN."""
        steps, values = [], []
        for entry in self.log:
            if entry["kind"] == kind and key in entry["metrics"]:
                value = entry["metrics"][key]
                steps.append(entry["step"])
                values.append(math.nan if value is None else float(value))
        return steps, values

    def update_norm_levels(self) -> list[str]:
        """Memory levels whose update norm was logged (``memory``, ``selfmod``, ``cms0`` ...)."""
        seen: dict[str, None] = {}
        for entry in self.log:
            for key in entry["metrics"]:
                if key.startswith("update_norm/"):
                    seen[key.split("/", 1)[1]] = None
        return list(seen)


def _read_json(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise NLReproError(f"{path}: not found (run `dvc repro {stage}` first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NLReproError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise NLReproError(f"{path}: expected a JSON object")
    return data


def _read_log(path: Path, stage: str) -> list[dict[str, Any]]:
    """The per-step log, one entry per (kind, step): a resumed run may have logged a step
    twice, and the later line is the one the finished run stands on."""
    if not path.is_file():
        raise NLReproError(f"{path}: not found (run `dvc repro {stage}` first)")
    entries: dict[tuple[str, int], dict] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key = (str(entry["kind"]), int(entry["step"]))
            if not isinstance(entry["metrics"], dict):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise NLReproError(f"{path}:{n}: not a log entry (kind, step, metrics)") from None
        entries[key] = entry
    return sorted(entries.values(), key=lambda e: (e["step"], e["kind"]))


def load_runs(root: Path, variants: list[str], seeds: list[int]) -> list[VariantRun]:
    """Every (variant, seed) run's outputs, each checked before anything is drawn or
    written; ordered by variant, then seed."""
    runs = []
    for v in variants:
        for seed in seeds:
            run, stage = run_name(v, seed), f"{v}-{seed}"
            train_dir = root / "metrics/train" / run
            runs.append(VariantRun(
                name=v,
                train=_read_json(train_dir / "metrics.json", f"train@{stage}"),
                log=_read_log(train_dir / "log.jsonl", f"train@{stage}"),
                eval=_read_json(root / "metrics/eval" / f"{run}.json", f"evaluate@{stage}"),
                seed=seed,
            ))
    return runs


def _mean_tree(trees: list[Any]) -> Any:
    """The element-wise mean of JSON trees of one shape: numbers are averaged (a null
    in some trees gives NaN, in all of them null), mappings keep the keys every tree has, lists of equal length are
    averaged item by item; anything else is taken from the first tree."""
    first = trees[0]
    if isinstance(first, bool) or isinstance(first, str):
        return first
    if isinstance(first, (int, float)) or first is None:
        if not all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))
                   for x in trees):
            return first
        if all(x is None for x in trees):
            return None
        if any(x is None for x in trees):
            return math.nan
        # Equal values stay as they are (an int stays an int: counts, window sizes).
        return first if all(x == first for x in trees) else math.fsum(trees) / len(trees)
    if isinstance(first, dict):
        if not all(isinstance(x, dict) for x in trees):
            return first
        return {k: _mean_tree([x[k] for x in trees]) for k in first if all(k in x for x in trees)}
    if isinstance(first, list):
        if not all(isinstance(x, list) and len(x) == len(first) for x in trees):
            return first
        return [_mean_tree(list(items)) for items in zip(*trees)]
    return first


def average_runs(runs: list[VariantRun]) -> list[VariantRun]:
    """One run per variant for the curves and figures: a variant with one seed as it is,
    with several the mean over its seeds of every logged value (the (kind, step) entries
    all seeds logged) and of every number of the evaluation (``seed`` None)."""
    groups: dict[str, list[VariantRun]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    out = []
    for name, group in groups.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        logs = [{(e["kind"], e["step"]): e for e in r.log} for r in group]
        common = [key for key in logs[0] if all(key in log for log in logs)]
        log = [{"kind": k, "step": s,
                "metrics": _mean_tree([log[(k, s)]["metrics"] for log in logs])}
               for k, s in common]
        out.append(VariantRun(name, _mean_tree([r.train for r in group]), log,
                              _mean_tree([r.eval for r in group]), seed=None))
    return out


def _get(d: dict, *keys: str, where: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            raise NLReproError(f"{where}: missing '{'.'.join(keys)}'")
        d = d[key]
    return d


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _num_at(d: dict, *keys: str, where: str) -> float:
    """The number at ``keys`` (null reads as NaN); a missing key or a value that is not a
    JSON number is one line naming the field."""
    value = _get(d, *keys, where=where)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NLReproError(f"{where}: '{'.'.join(keys)}' is not a number "
                           f"(got {json.dumps(value)[:40]})")
    return float(value)


def _object_at(d: dict, *keys: str, where: str) -> dict:
    """The JSON object at ``keys``; anything else is one line naming the field."""
    value = _get(d, *keys, where=where)
    if not isinstance(value, dict):
        raise NLReproError(f"{where}: '{'.'.join(keys)}' is not an object")
    return value


def _int_at(d: dict, *keys: str, where: str) -> int:
    """The whole number at ``keys``; anything else is one line naming the field."""
    value = _num_at(d, *keys, where=where)
    if not value.is_integer():
        raise NLReproError(f"{where}: '{'.'.join(keys)}' is not a whole number")
    return int(value)


def _rates(d: dict, *keys: str, where: str) -> dict[str, float]:
    """``{guard: share clipped}`` of an optional ``clip_rate`` object ({} when absent)."""
    if keys[-1] not in _object_at(d, *keys[:-1], where=where):
        return {}
    return {guard: _num_at(d, *keys, guard, where=where)
            for guard in sorted(_object_at(d, *keys, where=where))}


def train_throughput(run: VariantRun) -> float:
    """Median of the logged training tokens/s: robust to the first (warm-up) interval and
    to evaluation pauses, which ``tokens_seen / train_seconds`` would count."""
    _, tps = run.curve("train", "tokens_per_s")
    tps = [t for t in tps if math.isfinite(t)]
    return statistics.median(tps) if tps else math.nan


def _zero_shot_metrics(results: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """``zs_<task>_<metric>`` -> (value, chance) for every zero-shot metric evaluated."""
    out: dict[str, tuple[float, float | None]] = {}
    for task, res in sorted(results.items()):
        if task == "average_accuracy":
            out["zs_average_accuracy"] = (_num(res), None)
            continue
        chance = res.get("chance", {})
        for metric, value in sorted(res.items()):
            if metric in ("chance", "n") or isinstance(value, (dict, list)):
                continue
            out[f"zs_{task}_{metric}"] = (_num(value), chance.get(metric))
    return out


def variant_metrics(run: VariantRun) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, chance) of one variant under the summary's flat names."""
    t, e = run.train, run.eval
    tw = f"metrics/train/{run.run}/metrics.json"
    ew = f"metrics/eval/{run.run}.json"
    m: dict[str, float] = {
        "params": _num(_get(t, "params", where=tw)),
        "tokens_seen": _num(_get(t, "tokens_seen", where=tw)),
        "steps": _num(_get(t, "step", where=tw)),
        "val_loss": _num(_get(t, "val", "loss", where=tw)),
        "val_ppl": _num(_get(t, "val", "ppl", where=tw)),
        "skipped_steps": _num(_get(t, "skipped_steps", where=tw)),
        "max_update_norm": _num(t.get("max_update_norm")),
        "teach_scale_final": _num(t.get("teach_scale_final")),
        "tokens_per_s": train_throughput(run),
        "train_seconds": _num(t.get("train_seconds")),
    }
    chance: dict[str, float] = {"val_ppl": _num(_get(e, "offline", "perplexity", "chance",
                                                      "token_perplexity", where=ew))}
    chance["val_loss"] = math.log(chance["val_ppl"])
    for name, task, key in OFFLINE:
        res = _get(e, "offline", task, where=ew)
        m[name] = _num(_get(res, key, where=f"{ew} offline"))
        c = res.get("chance")
        c = c.get(_OFFLINE_CHANCE.get((task, key), key)) if isinstance(c, dict) else c
        if c is not None:
            chance[name] = float(c)
    passkey = e["offline"]["passkey"]
    for length, acc in zip(*passkey_by_length(run)):
        m[f"passkey_acc_len{length}"] = acc
        chance[f"passkey_acc_len{length}"] = float(passkey["chance"])
    for length, ll in passkey.get("key_loglik_by_length", {}).items():
        m[f"passkey_key_loglik_len{length}"] = _num(ll)
        chance[f"passkey_key_loglik_len{length}"] = math.log(float(passkey["chance"]))
    for name, (value, c) in _zero_shot_metrics(e.get("zero_shot", {})).items():
        m[name] = value
        if c is not None:
            chance[name] = float(c)
    m.update(icl_metrics(run))
    m.update({f"train_clip_rate_{g}": r for g, r in _rates(t, "clip_rate", where=tw).items()})
    return m, chance


# Scalars of the evaluation's ``icl`` object, summarised as ``icl_<key>`` (nats/token).
ICL_SCALARS = ("loss_on", "loss_off", "gain", "gain_second_half")


@dataclass(frozen=True)
class IclSetup:
    """What report.md says around one variant's in-context learning numbers."""

    attention: str | None        # "swa (64)", "full", "none"; None: not recorded
    sequences: int | None        # None: ``icl`` not measured
    length: int | None           # validation tokens per sequence
    mechanisms: tuple[str, ...]  # ablated mechanisms, in the evaluation's order
    train_guards: bool           # the training summary has ``clip_rate``

    @property
    def measured(self) -> bool:
        return self.sequences is not None


def icl_setup(run: VariantRun) -> IclSetup:
    """Attention, sequence count and length, and mechanisms of one variant (checked)."""
    ew = f"metrics/eval/{run.run}.json"
    lin = run.eval.get("lineage", {})
    attention = lin.get("attention") if isinstance(lin, dict) else None
    window = lin.get("window") if isinstance(lin, dict) else None
    if attention is not None and not isinstance(attention, str):
        raise NLReproError(f"{ew}: 'lineage.attention' is not a string")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise NLReproError(f"{ew}: 'lineage.window' is not an integer or null")
    if attention is not None and window is not None:
        attention = f"{attention} ({window})"
    sequences = length = None
    mechanisms: tuple[str, ...] = ()
    if "icl" in run.eval:
        _object_at(run.eval, "icl", where=ew)
        sequences = _int_at(run.eval, "icl", "sequences", where=ew)
        length = _int_at(run.eval, "icl", "length", where=ew)
        mechanisms = tuple(_object_at(run.eval, "icl", "ablation", where=ew))
    return IclSetup(attention, sequences, length, mechanisms, "clip_rate" in run.train)


def icl_by_position(run: VariantRun) -> dict[str, tuple[list[float], list[float]]]:
    """``{"on"|"off": (bucket midpoints, mean loss)}`` of the evaluation ({} when not
    measured); every bucket is checked."""
    if "icl" not in run.eval:
        return {}
    ew = f"metrics/eval/{run.run}.json"
    out = {}
    for kind in ("on", "off"):
        buckets = _get(run.eval, "icl", "by_position", kind, where=ew)
        if not isinstance(buckets, list):
            raise NLReproError(f"{ew}: 'icl.by_position.{kind}' is not a list")
        mids, losses = [], []
        for i, bucket in enumerate(buckets):
            where = f"{ew} icl.by_position.{kind}[{i}]"
            mid = (_num_at(bucket, "start", where=where) + _num_at(bucket, "end", where=where)) / 2
            mids.append(int(mid) if mid.is_integer() else mid)
            losses.append(_num_at(bucket, "loss", where=where))
        out[kind] = (mids, losses)
    return out


def icl_metrics(run: VariantRun) -> dict[str, float]:
    """The flat summary names of the evaluation's ``icl`` object ({} when not measured):
    ``icl_<scalar>``, ``icl_gain_<mechanism>``, ``stream_*``, ``clip_rate_<guard>``. The
    whole object is checked, by-position buckets included."""
    e, ew = run.eval, f"metrics/eval/{run.run}.json"
    if "icl" not in e:
        return {}
    icl_setup(run)                                  # checks icl is an object first
    icl_by_position(run)
    m = {f"icl_{key}": _num_at(e, "icl", key, where=ew) for key in ICL_SCALARS}
    for mech in _object_at(e, "icl", "ablation", where=ew):
        m[f"icl_gain_{mech}"] = _num_at(e, "icl", "ablation", mech, "gain", where=ew)
    if "stream" in _object_at(e, "icl", where=ew):
        stream = _object_at(e, "icl", "stream", where=ew)
        finite = _get(e, "icl", "stream", "finite", where=ew)
        if not isinstance(finite, bool):
            raise NLReproError(f"{ew}: 'icl.stream.finite' is not true or false")
        m["stream_finite"] = float(finite)
        for key in ("max_ratio", "min_ratio"):   # absent only when there is no fast weight
            if key in stream:
                m[f"stream_{key}"] = _num_at(e, "icl", "stream", key, where=ew)
    m.update({f"clip_rate_{g}": r for g, r in _rates(e, "icl", "clip_rate", where=ew).items()})
    return m


def summarize(runs: list[VariantRun]
              ) -> tuple[dict[str, dict[int, dict[str, float]]], dict[str, float]]:
    """``({variant: {seed: {metric: value}}}, chance)``, every run checked. Chance is the
    same for every run (one tokenizer, one task set); the first run's is kept."""
    per_seed: dict[str, dict[int, dict[str, float]]] = {}
    chance: dict[str, float] = {}
    for run in runs:
        per_seed.setdefault(run.name, {})[run.seed], c = variant_metrics(run)
        for key, value in c.items():
            chance.setdefault(key, value)
    return per_seed, chance


ZS_METRICS = ("acc_norm", "acc", "word_perplexity", "byte_perplexity", "bits_per_byte",
              "perplexity")


def zero_shot_label(key: str) -> str:
    """``zs_arc_easy_acc_norm`` -> ``arc_easy acc_norm`` (task names hold underscores, so
    the metric is matched as a known suffix)."""
    body = key[3:]
    for metric in ZS_METRICS:
        if body.endswith("_" + metric):
            return f"{body[:-len(metric) - 1]} {metric}"
    return body


def passkey_by_length(run: VariantRun) -> tuple[list[int], list[float]]:
    """(lengths, accuracy) of passkey retrieval as the evaluate stage reported them."""
    by_length = run.eval["offline"]["passkey"].get("acc_by_length", {})
    lengths = sorted(by_length, key=int)
    return [int(n) for n in lengths], [_num(by_length[n]) for n in lengths]


def passkey_grid(run: VariantRun) -> tuple[list[int], list[float], list[list[float]]]:
    """(lengths, depths, acc[length][depth]) of passkey retrieval, sorted numerically
    (depth keys are compared as numbers: "1" and "1.0" are one depth)."""
    grid = {int(n): {float(d): a for d, a in row.items()}
            for n, row in run.eval["offline"]["passkey"].get("acc_grid", {}).items()}
    lengths = sorted(grid)
    depths = sorted({d for row in grid.values() for d in row})
    return lengths, depths, [[_num(grid[n].get(d)) for d in depths] for n in lengths]

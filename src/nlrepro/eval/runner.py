"""One run's evaluation: load the checkpoint strictly, score the offline suite and the
configured zero-shot tasks, and assemble the result with its lineage.

``evaluate_run`` returns the summary (``metrics/eval/<run>.json``) and the per-example
records of every task (``metrics/eval/<run>/<task>.jsonl``); ``write_results`` writes both
atomically. The stage passes every path in (``EvalPaths``); nothing here knows the
pipeline's file layout.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from nlrepro.configlib import digest
from nlrepro.data.tokenizer import EOS, file_hash, load_tokenizer
from nlrepro.errors import NLReproError
from nlrepro.eval.config import EvalConfig
from nlrepro.eval.icl import icl_effect, mechanisms, stream_stability, validation_rows
from nlrepro.eval.metrics import HEADLINE_METRICS, average_accuracy, evaluate_task
from nlrepro.eval.offline import (
    documents_sha256,
    evaluate_choice,
    evaluate_last_word,
    evaluate_perplexity,
    heldout_documents,
)
from nlrepro.eval.passkey import evaluate_passkey
from nlrepro.eval.scorer import ModelScorer
from nlrepro.eval.tasks import TaskData, load_task
from nlrepro.io import atomic_dir, write_json
from nlrepro.model.lm import NestedLM
from nlrepro.progress import Progress
from nlrepro.train.checkpoint import RunConfig, model_from_checkpoint


@dataclass
class LoadedModel:
    model: NestedLM
    tokenizer: Any
    run: RunConfig
    teach_scale: float               # in force when training ended
    step: int
    checkpoint_sha256: str
    config_hash: str
    tokenizer_sha256: str


@dataclass(frozen=True)
class EvalPaths:
    """Where one run's evaluation reads: the checkpoint, the tokenizer it was trained with,
    and the shard directory holding the held-out splits."""
    checkpoint: Path
    tokenizer: Path
    shards: Path


def load_checkpoint_model(ckpt_path: Path, tokenizer_path: Path,
                          variant: Optional[str] = None, seed: Optional[int] = None
                          ) -> LoadedModel:
    """The model of a training checkpoint (``model_from_checkpoint``) and its tokenizer,
    which must be the one it was trained with. ``variant`` and ``seed``, when given, must
    be the checkpoint's (None: whichever it holds)."""
    loaded = model_from_checkpoint(ckpt_path, variant, seed)
    run = loaded.run
    tokenizer = load_tokenizer(tokenizer_path)
    tok_sha = file_hash(tokenizer_path)
    if tok_sha != run.data.tokenizer_sha256:
        raise NLReproError(f"{tokenizer_path}: not the tokenizer {ckpt_path} was trained with "
                           f"(sha256 {tok_sha[:12]} != {run.data.tokenizer_sha256[:12]})")
    return LoadedModel(loaded.model, tokenizer, run, loaded.progress.teach_scale,
                       loaded.progress.step, loaded.sha256, loaded.config_hash, tok_sha)


def load_zero_shot(cfg: EvalConfig) -> dict[str, TaskData]:
    """Every configured zero-shot task, loaded and validated before any scoring."""
    if cfg.tasks:
        import datasets  # slow to import: only when a task is configured

        datasets.disable_progress_bars()  # keeps an input error to one line on stderr
    return {name: load_task(name, path, limit=cfg.task_limit) for name, path in cfg.tasks.items()}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _timed(progress_name: str, scorer: ModelScorer, total: Optional[int], fn: Callable[[], Any]
           ) -> tuple[Any, float]:
    progress = Progress(progress_name, total=total, unit="requests")
    scorer.on_batch = progress.update
    try:
        result = fn()
    finally:
        scorer.on_batch = None
    return result, progress.close()


def zero_shot_chance(data: TaskData, scorer: ModelScorer) -> dict[str, float]:
    """What a uniform guess scores: 1/choices for multiple choice; a uniform distribution
    over the vocabulary for LAMBADA and WikiText."""
    kind, log_v = data.spec.kind, math.log(scorer.vocab_size)
    if kind == "multiple_choice":
        p = sum(1.0 / len(ex.choices) for ex in data.examples) / len(data.examples)
        return {m: p for m in data.spec.metrics}
    if kind == "loglikelihood":
        n = [len(scorer.encode(ex.target)) for ex in data.examples]
        return {"acc": sum(scorer.vocab_size ** -k for k in n) / len(n),
                "perplexity": math.exp(log_v * sum(n) / len(n))}
    tokens = sum(len(scorer.encode(ex.text)) for ex in data.examples)
    words = sum(ex.words for ex in data.examples)
    n_bytes = sum(ex.bytes for ex in data.examples)
    return {"word_perplexity": math.exp(tokens * log_v / words),
            "byte_perplexity": math.exp(tokens * log_v / n_bytes),
            "bits_per_byte": tokens * log_v / (n_bytes * math.log(2))}


def run_offline(scorer: ModelScorer, docs, cfg: EvalConfig, seed: int, label: str
                ) -> tuple[dict, dict, dict, dict]:
    """The offline suite: metrics, records, data hashes and wall seconds, by task."""
    metrics, records, hashes, seconds = {}, {}, {}, {}
    n_lw, n_ch = cfg.last_word.samples, cfg.choice.samples * cfg.choice.num_choices
    for name, total, fn in [
        ("perplexity", None, lambda: evaluate_perplexity(scorer, docs, cfg.perplexity, seed)),
        ("last_word", n_lw, lambda: evaluate_last_word(scorer, docs, cfg.last_word, seed)),
        ("choice", n_ch, lambda: evaluate_choice(scorer, docs, cfg.choice, seed)),
    ]:
        (metrics[name], records[name], hashes[name]), seconds[name] = \
            _timed(f"eval {label} {name}", scorer, total, fn)
    start = time.monotonic()
    metrics["passkey"], records["passkey"], hashes["passkey"] = \
        evaluate_passkey(scorer, cfg.passkey, seed)
    seconds["passkey"] = time.monotonic() - start
    return metrics, records, hashes, seconds


def run_icl(scorer: ModelScorer, val_docs, cfg: EvalConfig, label: str) -> dict:
    """The in-context learning section (``eval/icl.py``) on the validation split, read as
    one token stream (documents joined by the end-of-text token, as in training rows)."""
    stream = []
    for doc in val_docs:
        stream += scorer.encode(doc.text) + [scorer.prefix_token]
    stream = np.asarray(stream, dtype=np.int64)
    model, icfg = scorer.model, cfg.icl
    rows = validation_rows(stream, icfg.length, icfg.sequences)
    print(f"eval {label} icl: {len(rows)} sequences of {icfg.length} tokens, on / off / per mechanism",
          file=sys.stderr, flush=True)
    out = icl_effect(model, rows, scorer.teach_scale, cfg.batch_size, cfg.stream_chunk, icfg.bucket)
    if icfg.stream_tokens and mechanisms(model):
        out["stream"] = stream_stability(model, stream[:icfg.stream_tokens], icfg.stream_teach_scale,
                                         cfg.stream_chunk)
    return out


def evaluate_run(cfg: EvalConfig, paths: EvalPaths, variant: str, seed: int,
                 sample_seed: int, params_hash: str
                 ) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """One run (variant, training seed). Sampling of the evaluation items follows
    ``sample_seed`` (the top-level ``seed``), so every run sees the same items and seeds can
    be compared pairwise; ``params_hash`` goes into the lineage."""
    start = time.monotonic()
    tasks = load_zero_shot(cfg)
    ckpt_path = paths.checkpoint
    loaded = load_checkpoint_model(ckpt_path, paths.tokenizer, variant, seed)
    docs = heldout_documents(paths.shards, cfg.sources)

    max_len = cfg.max_len or loaded.run.data.row_len - 1
    if cfg.teach_scale is not None:
        teach_scale, teach_source = cfg.teach_scale, "eval.teach_scale"
    else:
        teach_scale, teach_source = float(loaded.teach_scale), "checkpoint"
    scorer = ModelScorer(loaded.model, loaded.tokenizer, teach_scale, max_len, cfg.batch_size,
                         cfg.stream_chunk)

    offline, records, hashes, seconds = run_offline(scorer, docs, cfg, sample_seed, variant)
    start_icl = time.monotonic()
    val_docs = heldout_documents(paths.shards, cfg.sources, split="val")
    icl = run_icl(scorer, val_docs, cfg, variant)
    hashes["icl"] = documents_sha256(val_docs)
    seconds["icl"] = time.monotonic() - start_icl
    zero_shot = {}
    for name, data in tasks.items():
        n_req = sum(len(getattr(ex, "requests", ())) for ex in data.examples) or None
        result, seconds[name] = _timed(
            f"eval {variant} {name}", scorer, n_req,
            lambda data=data: evaluate_task(data, scorer.loglikelihood, scorer.loglikelihood_rolling))
        zero_shot[name] = {**result.metrics, "chance": zero_shot_chance(data, scorer),
                           "n": len(data.examples)}
        records[name], hashes[name] = result.records, data.sha256
    if all(task in zero_shot for task in HEADLINE_METRICS):
        zero_shot["average_accuracy"] = average_accuracy(zero_shot)
    seconds["total"] = time.monotonic() - start

    summary = {
        "variant": variant,
        "train_seed": seed,
        "offline": offline,
        "icl": icl,
        "zero_shot": zero_shot,
        "lineage": {
            "checkpoint": {"path": str(ckpt_path), "sha256": loaded.checkpoint_sha256,
                           "step": loaded.step, "config_hash": loaded.config_hash},
            "params_hash": {"eval": digest(cfg), "params": params_hash},
            "tokenizer_sha256": loaded.tokenizer_sha256,
            "test_split_sha256": documents_sha256(docs),
            "task_data_sha256": hashes,
            "task_sources": {"offline": "data/shards test split + synthetic passkey generator",
                             **{name: data.source for name, data in tasks.items()}},
            "samples": {name: len(rs) for name, rs in records.items()},
            "git_commit": git_commit(),
            "seed": sample_seed,
            "teach_scale": teach_scale,
            "teach_scale_source": teach_source,
            "attention": loaded.model.cfg.attention,
            "window": loaded.model.cfg.window if loaded.model.cfg.attention == "swa" else None,
            "max_len": max_len,
            "stream_chunk": scorer.stream_chunk,
            "batch_size": cfg.batch_size,
            "prefix_token": {"id": scorer.prefix_token, "token": EOS},
            "torch_threads": torch.get_num_threads(),
            "wall_time_s": seconds,
        },
    }
    return summary, records


def write_results(summary: dict[str, Any], records: dict[str, list[dict]], out_dir: Path,
                  metrics_path: Path) -> None:
    """Records first (the directory is swapped in whole), then the summary: a crash leaves
    no summary that points at missing or partial records."""
    with atomic_dir(out_dir) as tmp:
        for name, rows in records.items():
            with (tmp / f"{name}.jsonl").open("w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_json(metrics_path, summary)

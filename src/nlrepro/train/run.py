"""One training run from start to final weights: the body of the train stage.

``train_run(run, paths, info)`` seeds, checks memory, builds and wraps the model, resumes
from the run's last intact checkpoint (or an explicit one), trains, and writes the final
weights and the run's metrics. The caller passes the ``RunConfig`` and every path
(``RunPaths``); a run's checkpoints live in ``<checkpoints>/<run>-<config hash>/``.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from nlrepro.errors import NLReproError
from nlrepro.model.config import ModelConfig
from nlrepro.model.lm import build_model
from nlrepro.train import checkpoint as ckpt
from nlrepro.train import distributed as D
from nlrepro.train import resources as R
from nlrepro.train.checkpoint import RunConfig, seed_everything
from nlrepro.train.config import TrainConfig, run_name
from nlrepro.train.data import open_rows
from nlrepro.train.guardrails import RunLock
from nlrepro.train.logger import RunLogger
from nlrepro.train.loop import RunSpec, Trainer


@dataclass(frozen=True)
class RunPaths:
    """Where a run reads and writes."""
    tokens: Path          # the tokenised splits (data/tokens)
    checkpoints: Path     # parent of the run directory (resumable checkpoints, log)
    final: Path           # final weights (models/<run>.pt)
    metrics: Path         # DVCLive directory and log (metrics/train/<run>)

    def run_dir(self, run: RunConfig) -> Path:
        return self.checkpoints / f"{run_name(run.variant, run.seed)}-{run.hash()}"


def check_memory(name: str, model: ModelConfig, cfg: TrainConfig, vocab_size: int,
                 row_len: int, info: D.DistInfo) -> None:
    """Fail before reading data or allocating when even a lower bound of the run's memory
    does not fit (train/resources.py); the model is counted on the meta device, which
    allocates nothing."""
    with torch.device("meta"):
        meta = build_model(model, vocab_size)
    n_params = sum(p.numel() for p in meta.parameters())
    needed = R.estimate_bytes(n_params, cfg.batch_size // info.world, row_len - 1,
                              model.d_model, model.n_layers, info.world, cfg.fsdp,
                              cfg.activation_checkpointing)
    on_host = 1 if info.device.type == "cuda" else min(info.world, cfg.nproc)
    R.check_fits(name, needed, R.available_bytes(info.device), n_params, on_host)


def train_run(run: RunConfig, paths: RunPaths, info: D.DistInfo, lineage: dict,
              resume: Optional[Path] = None, until: Optional[int] = None) -> None:
    """Train ``run`` to ``train.steps`` (or stop at step ``until``, keeping a checkpoint)."""
    cfg = run.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(run.seed)  # the same initial weights on every rank
    train_rows, val_rows = open_rows(paths.tokens, "train"), open_rows(paths.tokens, "val")
    model = build_model(run.model, run.data.vocab_size, run.in_context).to(info.device)
    n_params = sum(p.numel() for p in model.parameters())
    if cfg.activation_checkpointing:
        D.apply_activation_checkpointing(model)
    wrapped = D.wrap(model, info, cfg.fsdp)
    if cfg.compile:  # the training forward only; evaluation and checkpoints use the bare model
        wrapped = D.compile_model(wrapped)

    run_dir = paths.run_dir(run)
    # FSDP runs checkpoint per-rank shards into a directory (train/sharded.py).
    last = run_dir / ("last.dcp" if cfg.fsdp else "last.pt")
    spec = RunSpec(run=run, out_dir=paths.metrics, ckpt_path=last,
                   final_path=paths.final, lineage={**lineage, "n_params": n_params})
    trainer = Trainer(spec, model, train_rows, val_rows, info, wrapped)
    name = run_name(run.variant, run.seed)
    with contextlib.ExitStack() as stack:
        if info.is_main:   # one writer per run directory: a second trainer fails at once
            stack.enter_context(RunLock(run_dir, name))
        _train_locked(trainer, spec, resume, until, info, name, n_params)


def _resume_from(spec: RunSpec, explicit: Path | None) -> Path | None:
    """``explicit`` (verified when it has a hash record), else the run's last intact
    checkpoint (a corrupt latest one falls back to the previous, said in one line)."""
    say = lambda msg: print(f"train: {msg}", file=sys.stderr)  # noqa: E731
    if explicit is None:
        return ckpt.pick_resumable(spec.ckpt_path, say)
    if ckpt.has_record(explicit):
        problem = ckpt.verify(explicit)
        if problem is not None:
            raise NLReproError(f"{explicit}: {problem}")
    return explicit


def _train_locked(trainer: Trainer, spec: RunSpec, resume: Path | None, until: int | None,
                  info: D.DistInfo, name: str, n_params: int) -> None:
    cfg = spec.train
    source = _resume_from(spec, resume)
    resumed = source is not None and trainer.resume(source)
    if resumed and info.is_main:
        print(f"train {name}: resuming from step {trainer.step}", file=sys.stderr)
    logger = (RunLogger(name, spec.out_dir, spec.ckpt_path.parent / "log.jsonl",
                        trainer.step if resumed else None) if info.is_main else None)
    start = time.monotonic()
    try:
        val = trainer.run(until=until, logger=logger)
    finally:
        if logger:
            logger.close()
    if trainer.step < cfg.steps:  # stopped early on purpose: keep the checkpoint
        trainer.save(spec.ckpt_path)
        return
    trainer.save(spec.final_path, with_optimizer=False)
    if info.is_main:  # finished: a later forced rerun starts afresh (the log stays)
        ckpt.remove_resumable(spec.ckpt_path)
    if logger:
        logger.finish(trainer.summary(n_params, time.monotonic() - start))
        print(f"train {name}: done, val loss {val['loss']:.4f} "
              f"(ppl {val['ppl']:.1f}), skipped {trainer.progress.skipped_steps} steps")

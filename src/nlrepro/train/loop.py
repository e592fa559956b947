"""The training loop: AdamW with warmup + cosine, the teach schedule before every
forward, guards against non-finite steps, periodic validation, checkpoints with exact
resume, and logging (DVCLive plus a JSON-lines log) on rank 0 only.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nlrepro.errors import NLReproError
from nlrepro.train.checkpoint import Progress, RunConfig, TrainingState
from nlrepro.train.data import TrainBatches, val_batches
from nlrepro.train.distributed import (DistInfo, all_true, full_state, load_full_state,
                                       mean_over_ranks)
from nlrepro.train.guards import SkipCounter, first_nonfinite_grad, first_nonfinite_module, write_snapshot
from nlrepro.train.logger import RunLogger
from nlrepro.train.schedule import TeachSchedule, lr_at


@dataclass
class RunSpec:
    """What one training run needs besides the model: its config and where it writes."""
    run: RunConfig                    # everything that defines the run (hashed into checkpoints)
    out_dir: Path                     # metrics/train/<run>: DVCLive + log.jsonl
    ckpt_path: Path                   # resumable checkpoint (not a DVC output)
    final_path: Path                  # final weights for evaluation (a DVC output)
    lineage: dict = field(default_factory=dict)  # stored in checkpoints, never hashed

    @property
    def train(self):
        return self.run.train


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices; never norms, gains, biases or other 1-D parameters."""
    decay, keep = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": keep, "weight_decay": 0.0}]


class Trainer:
    def __init__(self, spec: RunSpec, model: nn.Module, train_rows: np.ndarray,
                 val_rows: np.ndarray, dist: DistInfo = DistInfo(), wrapped: nn.Module | None = None):
        self.spec, self.dist = spec, dist
        self.model = model                  # the bare model (state dicts, hooks)
        self.net = wrapped or model         # what runs forward (DDP/FSDP wrapper)
        cfg, run = spec.train, spec.run
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                           betas=tuple(cfg.betas), fused=False)
        self.batches = TrainBatches(train_rows, cfg.batch_size, run.seed, dist.rank, dist.world)
        self.val_rows = val_rows
        self.teach_schedule = TeachSchedule(run.teach_scale, run.teach)
        self.skips = SkipCounter(cfg.max_skips)
        self.first_step_s: float | None = None   # of this process (compile time, if any)
        # Everything a resume restores: model, optimiser and the progress counters.
        self.state = TrainingState(model, self.optimizer,
                                   Progress(teach_scale=self.teach_schedule(0)), cfg.fsdp)

    @property
    def progress(self) -> Progress:
        return self.state.progress

    @property
    def step(self) -> int:
        return self.state.progress.step

    # --- checkpoints --------------------------------------------------------------------
    def save(self, path: Path, with_optimizer: bool = True) -> None:
        """Every rank calls this (gathering is collective under FSDP); rank 0 writes."""
        self.state.save(path, self.spec.run, self.spec.lineage, write=self.dist.is_main,
                        resumable=with_optimizer)

    def resume(self, path: Path) -> bool:
        """Continue from ``path`` if it exists (it must be of this run's config)."""
        if not path.exists():
            return False
        self.state.restore(path, self.spec.run)
        return True

    # --- one step -----------------------------------------------------------------------
    def _forward_loss(self, tokens: torch.Tensor, scale: float):
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        anomaly = (torch.autograd.detect_anomaly(check_nan=True)
                   if self.spec.train.anomaly == "detect" else contextlib.nullcontext())
        autocast = torch.autocast(self.dist.device.type, dtype=torch.bfloat16,
                                  enabled=self.spec.train.dtype == "bfloat16")
        with anomaly, autocast:
            result = self.net(inputs, teach_scale=scale)
            loss = lm_loss(result.logits, targets)
        return result, loss

    def train_step(self) -> dict:
        cfg, progress = self.spec.train, self.state.progress
        step = progress.step
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr_frac)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        scale = self.teach_schedule(step)
        tokens = self.batches.batch(step).to(self.dist.device)
        result, loss = self._forward_loss(tokens, scale)
        loss.backward()
        clip = self.spec.run.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), clip if clip is not None else float("inf"))
        finite = all_true(bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm)), self.dist)
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        stop = self.skips.record(step, finite)
        if not finite:
            progress.skipped_steps += 1
            progress.nonfinite_seen = True
        if stop:
            self._stop(tokens, scale)
        stats = {k: float(v) for k, v in result.stats.items()}
        for key, value in stats.items():
            if key.startswith("update_norm/") and math.isfinite(value):
                progress.max_update_norm = max(progress.max_update_norm, value)
        if clip is not None:
            stats["clip_rate/grad_norm"] = float(float(grad_norm) > clip)
        for key, value in stats.items():
            if key.startswith("clip_rate/"):
                total = progress.guard_sums.setdefault(key.split("/", 1)[1], [0.0, 0])
                total[0] += value
                total[1] += 1
        progress.teach_scale = scale
        progress.tokens_seen += tokens[:, 1:].numel() * self.dist.world
        progress.step += 1
        return {"loss": mean_over_ranks(float(loss.detach()), self.dist), "lr": lr,
                "teach_scale": scale, "grad_norm": float(grad_norm), "skipped": not finite,
                **stats}

    def _stop(self, tokens: torch.Tensor, scale: float) -> None:
        """Too many consecutive non-finite steps: locate the culprit, snapshot, stop."""
        inputs = tokens[:, :-1]
        module = first_nonfinite_module(self.model, lambda: self.model(inputs, teach_scale=scale))
        where = (f"first non-finite output in module '{module}'" if module
                 else f"forward finite; first non-finite gradient in '{first_nonfinite_grad(self.model)}'")
        snapshot = self.spec.out_dir / "debug" / f"nonfinite-step{self.step}.pt"
        if self.dist.is_main:
            write_snapshot(snapshot, step=self.step, tokens=tokens.cpu(), teach_scale=scale,
                           module=module, model=self.model.state_dict())
        raise NLReproError(
            f"train: {self.skips.consecutive} consecutive non-finite steps (from step "
            f"{self.skips.first_step}); {where}; debug snapshot {snapshot}")

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean validation loss over fixed batches (every rank the same batches)."""
        was = self.net.training
        self.model.eval()
        total, count = 0.0, 0
        bs = max(1, self.spec.train.batch_size // self.dist.world)
        for batch in val_batches(self.val_rows, bs, self.spec.train.eval_batches):
            batch = batch.to(self.dist.device)
            result = self.model(batch[:, :-1], teach_scale=self.progress.teach_scale)
            total += float(lm_loss(result.logits, batch[:, 1:])) * batch.shape[0]
            count += batch.shape[0]
        self.model.train(was)
        loss = total / count
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}

    # --- the run ------------------------------------------------------------------------
    def run(self, until: int | None = None, logger: RunLogger | None = None) -> dict:
        """Train to ``train.steps`` (or stop early at ``until``: a time-boxed job)."""
        cfg = self.spec.train
        end = cfg.steps if until is None else min(until, cfg.steps)
        self.net.train()
        start_time, start_step, last = time.monotonic(), self.step, {}
        while self.step < end:
            t0 = time.monotonic()
            metrics = self.train_step()
            dt = time.monotonic() - t0
            if self.first_step_s is None:   # with train.compile: compilation included
                self.first_step_s = dt
                if cfg.compile and logger:
                    logger.note(f"first step {dt:.1f}s (torch.compile included)")
            step = self.step  # steps done
            if logger and (step % cfg.log_every == 0 or step == cfg.steps):
                done = step - start_step
                rate = done * cfg.batch_size * (self.batches.rows.shape[1] - 1) / max(
                    time.monotonic() - start_time, 1e-9)
                metrics.update(tokens_per_s=rate, skipped_total=self.progress.skipped_steps, step_s=dt)
                logger.log_train(step, metrics)
                eta = (end - step) * (time.monotonic() - start_time) / max(done, 1)
                logger.progress(step, cfg.steps, metrics, eta)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                last = self.evaluate()
                if logger:
                    logger.log_val(step, last)
            if step % cfg.ckpt_every == 0 and step < cfg.steps:
                self.save(self.spec.ckpt_path)
        return last

    def summary(self, params: int, seconds: float) -> dict:
        """Run totals beside DVCLive's latest train/val values in metrics.json."""
        p = self.progress
        return {"skipped_steps": p.skipped_steps,
                "max_update_norm": p.max_update_norm,
                "clip_rate": {k: total / count for k, (total, count) in sorted(p.guard_sums.items())},
                "nonfinite_seen": p.nonfinite_seen, "teach_scale_final": p.teach_scale,
                "tokens_seen": p.tokens_seen, "params": params,
                "train_seconds": seconds, "first_step_seconds": self.first_step_s}


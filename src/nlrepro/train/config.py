"""Typed configs of training: the stage (params.yaml ``train``), the teach schedule and
multipliers (``teach``) and the clips (``clip``). The model is handed only the part it
reads, ``in_context()`` (``nlrepro.model.config.InContextConfig``); the schedule and
``clip.grad_norm`` stay with the trainer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from nlrepro.configlib import ConfigError, rng
from nlrepro.model.config import VARIANTS, InContextConfig, Variant, check_levels

__all__ = ["VARIANTS", "ClipConfig", "TeachConfig", "TrainConfig", "in_context", "run_name"]


@dataclass(frozen=True)
class TeachConfig:
    """How strongly each in-context mechanism is taught, and the runtime schedule."""

    # Per-mechanism multipliers of teach_scale: memory, selfmod, cms0, cms1, ... (missing = 1.0).
    levels: dict[str, float] = field(default_factory=dict, metadata=rng(0.0, None))
    # Linear warmup of teach_scale from 0 over this many training steps.
    warmup_steps: int = field(default=200, metadata=rng(0, None))
    # Training step at which the linear decay starts; null = never decay.
    decay_start: Optional[int] = field(default=None, metadata=rng(0, None))
    # Length of the decay in training steps.
    decay_steps: int = field(default=1000, metadata=rng(1, None))
    # The decay ends at floor * teach_scale (never zero by default).
    floor: float = field(default=0.1, metadata=rng(0.0, 1.0))

    def validate(self, path: str) -> None:
        check_levels(self.levels, path)


@dataclass(frozen=True)
class ClipConfig:
    """Stability clips; null turns each off (docs/MODEL_DECISIONS.md §6, docs/STABILITY.md)."""

    # Per-token L2 clip of each memory mixer and CMS block output, same in train and eval.
    residual: Optional[float] = field(default=None, metadata=rng(0.0, None))
    # Frobenius-norm clip of each in-context weight update (per sequence, head, tensor).
    inner: Optional[float] = field(default=None, metadata=rng(0.0, None))
    # Global gradient-norm clip of the outer optimizer (the trainer's; the model never sees it).
    grad_norm: Optional[float] = field(default=1.0, metadata=rng(0.0, None))


def in_context(teach: TeachConfig, clip: ClipConfig, teach_clip: Optional[float]) -> InContextConfig:
    """The part of ``teach``, ``clip`` and ``teach_clip`` the model reads."""
    return InContextConfig(levels=dict(teach.levels), residual_clip=clip.residual,
                           inner_clip=clip.inner, teach_clip=teach_clip)


def run_name(variant: str, seed: int) -> str:
    """One training run, a (variant, seed) cell of the matrix: ``hope-s0``. It names the
    model (models/<run>.pt) and the metrics directories (metrics/train/<run>/,
    metrics/eval/<run>.json); the stages are ``train@<variant>-<seed>``."""
    return f"{variant}-s{seed}"


@dataclass(frozen=True)
class TrainConfig:
    # Model variants to train, one `train@<variant>-<seed>` stage per seed.
    variants: tuple[Variant, ...] = VARIANTS
    # Training seeds, one train and one evaluate stage per (variant, seed): model init and
    # data order follow the seed (the data stages keep the top-level seed).
    seeds: tuple[int, ...] = field(default=(0,), metadata=rng(0, 2**31 - 1))
    # Outer optimisation steps.
    steps: int = field(default=300, metadata=rng(1, None))
    # Global batch in sequences per step (split evenly over the ranks).
    batch_size: int = field(default=8, metadata=rng(1, None))
    # Peak learning rate of AdamW.
    lr: float = field(default=3.0e-3, metadata=rng(0.0, None))
    # The cosine ends at min_lr_frac * lr.
    min_lr_frac: float = field(default=0.1, metadata=rng(0.0, 1.0))
    # Linear learning-rate warmup in steps.
    warmup_steps: int = field(default=30, metadata=rng(0, None))
    # AdamW decoupled weight decay (not applied to norms, gains and biases).
    weight_decay: float = field(default=0.1, metadata=rng(0.0, None))
    # AdamW beta1 and beta2.
    betas: tuple[float, ...] = field(default=(0.9, 0.95), metadata=rng(0.0, 1.0))
    # Validate every this many steps (and at the end).
    eval_every: int = field(default=50, metadata=rng(1, None))
    # Validation batches per evaluation (null = the whole val split).
    eval_batches: Optional[int] = field(default=8, metadata=rng(1, None))
    # Log training metrics every this many steps.
    log_every: int = field(default=10, metadata=rng(1, None))
    # Write a resumable checkpoint every this many steps.
    ckpt_every: int = field(default=100, metadata=rng(1, None))
    # Consecutive skipped (non-finite) steps after which the run stops.
    max_skips: int = field(default=5, metadata=rng(1, None))
    # off | detect: run in-context updates under autograd anomaly detection.
    anomaly: Literal["off", "detect"] = "off"
    # Processes: 1 = single process; >1 = DDP through torchrun on this machine.
    nproc: int = field(default=1, metadata=rng(1, 1024))
    # Process-group backend: auto = nccl on GPU, gloo on CPU.
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    # auto | cpu | cuda.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Parameter and activation dtype on the device (bfloat16 autocast on GPU).
    dtype: Literal["float32", "bfloat16"] = "float32"
    # Shard parameters with FSDP2 instead of DDP (large presets; needs nproc > 1).
    fsdp: bool = False
    # Recompute each block's activations in backward (saves memory, costs time).
    activation_checkpointing: bool = False
    # torch.compile the model's chunk step (inductor; compile time reported apart from
    # the step time; docs/PERFORMANCE.md says when it pays).
    compile: bool = False
    # torch threads per process on CPU (null = torch's default).
    threads: Optional[int] = field(default=None, metadata=rng(1, 1024))

    def validate(self, path: str) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"{path}.betas: expected two numbers, got {list(self.betas)}")
        if not self.variants:
            raise ConfigError(f"{path}.variants: at least one variant is required")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"{path}.variants: each variant at most once")
        if not self.seeds:
            raise ConfigError(f"{path}.seeds: at least one seed is required")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"{path}.seeds: each seed at most once")
        if self.batch_size % self.nproc:
            raise ConfigError(f"{path}.batch_size: {self.batch_size} does not split over "
                              f"nproc={self.nproc} ranks")
        if self.fsdp and self.nproc < 2:
            raise ConfigError(f"{path}.fsdp: needs nproc > 1")

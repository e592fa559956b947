"""Typed configs of the model family: ``ModelConfig`` (params.yaml key ``model``) and
``InContextConfig``, the part of ``teach``, ``clip`` and ``teach_clip`` the model reads.

Every field has a default and a comment; ranges are inclusive (``rng``; None = open bound)
and are checked by the project's loader (``nlrepro.configlib.parse``), which also calls
each ``validate``. The defaults are the ``tiny`` preset of a ``transformer``; presets
(``nlrepro.model.presets``) override them per size and variant. The variant names are
defined here, once: ``Variant`` and ``VARIANTS``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Optional, get_args

from nlrepro.configlib import ConfigError, rng


# The three variants of the one backbone: Transformer++, Titans (MAG) and HOPE.
Variant = Literal["transformer", "titan", "hope"]
VARIANTS: tuple[str, ...] = get_args(Variant)
# How the papers and the report name them.
DISPLAY_NAMES = {"transformer": "Transformer++", "titan": "TITAN", "hope": "HOPE"}


@dataclass(frozen=True)
class MemoryConfig:
    """The Titans neural long-term memory (LMM), Titans §3; also HOPE's main memory."""

    # Layers of the per-head memory MLP M (1 = a matrix); M(k) = k + MLP(k).
    depth: int = field(default=2, metadata=rng(1, 8))
    # Hidden width of the memory MLP as a multiple of the head dimension.
    expansion: float = field(default=2.0, metadata=rng(0.25, 64.0))
    # Tokens per memory chunk (Eq. 16): gradients inside a chunk are taken at its start.
    chunk: int = field(default=32, metadata=rng(1, None))
    # Initial inner step as a share of the largest stable one: theta_t = sigmoid(.) / chunk,
    # and sigmoid(b_theta) starts here (gate initialisation; docs/MODEL_DECISIONS.md §2).
    step_init: float = field(default=0.5, metadata=rng(1.0e-4, 0.9999))
    # Width of the causal depthwise convolution on q, k, v (Titans §4.4).
    conv_width: int = field(default=4, metadata=rng(1, 64))
    # Stop gradients at every in-context write (memory, self-mod, CMS): cheaper, less faithful.
    detach_updates: bool = False


@dataclass(frozen=True)
class SelfModConfig:
    """HOPE's self-modifying projections M_k, M_v, M_eta, M_alpha (MODEL_DECISIONS.md)."""

    # Tokens per update of the projection memories (they update more often than M_mem).
    chunk: int = field(default=16, metadata=rng(1, None))
    # Update rule of HOPE's memories: bounded (self-generated target M(v) rescaled to the
    # norm of the memory's own read M(k), step sigmoid(.) / chunk, projections forget back
    # to their slow values; stable by construction) | plain (the plain reading: target
    # M(v) as is, step sigmoid(.), forgetting to 0; diverges, kept to reproduce the
    # journal's blow-up). docs/MODEL_DECISIONS.md §4.
    rule: Literal["bounded", "plain"] = "bounded"


@dataclass(frozen=True)
class CMSLevel:
    """One level of the Continuum Memory System (Eqs. 30-31)."""

    # Tokens between updates of this level's fast weights; null = static (outer loop only).
    chunk: Optional[int] = field(default=None, metadata=rng(1, None))
    # Hidden width of the level's SwiGLU MLP.
    width: int = field(default=352, metadata=rng(1, None))
    # In-context step size eta_l of Eq. 31 (multiplied by teach_scale and teach.levels).
    lr: float = field(default=0.01, metadata=rng(0.0, None))
    # Retention rho_l per update: the fast weights return toward the slow ones,
    # theta <- theta_0 + rho^s (theta - theta_0) - step (s = teach_scale * teach.levels);
    # 1.0 = Eq. 31 as written (no forgetting).
    retention: float = field(default=1.0, metadata=rng(0.0, 1.0))


@dataclass(frozen=True)
class CMSConfig:
    """The CMS chain, highest frequency first (HOPE's feed-forward part)."""

    # Levels, highest frequency (smallest chunk) first.
    levels: tuple[CMSLevel, ...] = (
        CMSLevel(chunk=16, width=44),
        CMSLevel(chunk=64, width=44),
        CMSLevel(chunk=256, width=44),
    )

    def validate(self, path: str) -> None:
        if not self.levels:
            raise ConfigError(f"{path}.levels: at least one level is required")


@dataclass(frozen=True)
class ModelConfig:
    """One backbone, three variants (docs/MODEL_DECISIONS.md §1, §7)."""

    # Variant: transformer (Transformer++) | titan (attention + Titans LMM) | hope.
    type: Variant = "transformer"
    # Preset whose fields sit under these keys (nlrepro.model.presets); null = none.
    preset: Optional[str] = "tiny"
    # Residual stream width.
    d_model: int = field(default=128, metadata=rng(8, None))
    # Number of residual blocks.
    n_layers: int = field(default=4, metadata=rng(1, None))
    # Heads of attention and of the memories; d_model must divide by it.
    n_heads: int = field(default=4, metadata=rng(1, None))
    # Attention in the mixer: full causal | swa (sliding window) | none (memory only).
    attention: Literal["full", "swa", "none"] = "full"
    # Sliding-window size in tokens (attention: swa).
    window: int = field(default=512, metadata=rng(1, None))
    # Tokens per recurrence step (a divisor of every level chunk); null = smallest level chunk.
    chunk: Optional[int] = field(default=None, metadata=rng(1, None))
    # Hidden width of the static SwiGLU MLP (transformer, titan).
    mlp_width: int = field(default=352, metadata=rng(1, None))
    # Rotary position base.
    rope_base: float = field(default=10000.0, metadata=rng(1.0, None))
    # Epsilon of every RMSNorm.
    norm_eps: float = field(default=1.0e-6, metadata=rng(0.0, 1.0))
    # Standard deviation of the initial embedding and projection weights.
    init_std: float = field(default=0.02, metadata=rng(0.0, 1.0))
    # Titans LMM (titan) and HOPE's main memory M_mem (hope).
    memory: MemoryConfig = MemoryConfig()
    # HOPE's self-modifying projection memories (hope only).
    selfmod: SelfModConfig = SelfModConfig()
    # HOPE's Continuum Memory System (hope only).
    cms: CMSConfig = CMSConfig()

    def validate(self, path: str) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"{path}.n_heads: must divide d_model={self.d_model}")
        if self.type == "transformer" and self.attention == "none":
            raise ConfigError(f"{path}.attention: a transformer needs attention")
        base = base_chunk(self)
        if base is None:
            return
        for name, chunk in level_chunks(self).items():
            if chunk % base:
                raise ConfigError(f"{path}.{name}: {chunk} is not a multiple of the step chunk {base}")


MECHANISM = re.compile(r"memory|selfmod|cms\d+")


@dataclass(frozen=True)
class InContextConfig:
    """What the in-context updates read besides ``ModelConfig`` and the teach scale in
    force (a runtime float): per-mechanism multipliers and the three stability clips.
    Built by the training config from params.yaml ``teach.levels``, ``clip.residual``,
    ``clip.inner`` and ``teach_clip``; stored in every checkpoint (docs/MODEL_DECISIONS.md
    §6, docs/STABILITY.md)."""

    # Per-mechanism multipliers of teach_scale: memory, selfmod, cms0, cms1, ... (missing = 1.0).
    levels: dict[str, float] = field(default_factory=dict, metadata=rng(0.0, None))
    # Per-token L2 clip of each memory mixer and CMS block output, same in train and eval.
    residual_clip: Optional[float] = field(default=None, metadata=rng(0.0, None))
    # Frobenius-norm clip of each in-context weight update (per sequence, head, tensor).
    inner_clip: Optional[float] = field(default=None, metadata=rng(0.0, None))
    # Per-token L2 clip of teach_scale * delta_t, the teach signal of the CMS levels.
    teach_clip: Optional[float] = field(default=None, metadata=rng(0.0, None))

    def validate(self, path: str) -> None:
        check_levels(self.levels, path)

    def multiplier(self, mechanism: str) -> float:
        """The multiplier of ``mechanism`` (e.g. ``"cms1"``); 1.0 when not listed."""
        return self.levels.get(mechanism, 1.0)


def check_levels(levels: dict[str, float], path: str, cfg: Optional[ModelConfig] = None) -> None:
    """Every key names a mechanism (of ``cfg``'s CMS chain, when given)."""
    for key, value in levels.items():
        if not MECHANISM.fullmatch(key):
            raise ConfigError(f"{path}.levels.{key}: unknown mechanism (memory, selfmod, cms0, cms1, ...)")
        if value < 0:
            raise ConfigError(f"{path}.levels.{key}: must be >= 0, got {value!r}")
        if cfg is not None and cfg.type == "hope" and key.startswith("cms") \
                and int(key[3:]) >= len(cfg.cms.levels):
            raise ConfigError(f"{path}.levels.{key}: the hope model has {len(cfg.cms.levels)} "
                              "CMS levels")


def level_chunks(cfg: ModelConfig) -> dict[str, int]:
    """The chunk of every in-context level of the variant, by params key."""
    chunks: dict[str, int] = {}
    if cfg.type in ("titan", "hope"):
        chunks["memory.chunk"] = cfg.memory.chunk
    if cfg.type == "hope":
        chunks["selfmod.chunk"] = cfg.selfmod.chunk
        for i, level in enumerate(cfg.cms.levels):
            if level.chunk is not None:
                chunks[f"cms.levels[{i}].chunk"] = level.chunk
    return chunks


def base_chunk(cfg: ModelConfig) -> Optional[int]:
    """Tokens per recurrence step: ``cfg.chunk`` or the smallest level chunk; None = no limit."""
    if cfg.chunk is not None:
        return cfg.chunk
    chunks = level_chunks(cfg).values()
    return min(chunks) if chunks else None

"""The chunk-recurrent language model shared by transformer, titan and hope (docs/MODEL_DECISIONS.md §1-3).

Tied embedding, pre-norm blocks ``x = x + mixer(norm(x)); x = x + ffn(norm(x))``, final
RMSNorm, logits = RMSNorm(h) E^T. The model is a recurrence over chunks:

    logits, state = model.step(chunk_tokens, state, teach_scale)

where the state carries each layer's attention cache, memory weights and momentum and
CMS fast weights, plus the last step's stream awaiting its teach signal. ``forward``
loops over steps of the base chunk, aligned to absolute positions, so one call equals the
same tokens fed in pieces with the state carried. Fast weights start from the slow
parameters in every new state and are never written back into them.

Each block touches only its own parameters: it builds its fresh state from them on its
first step (a ``None`` layer state) and absorbs the CMS teach signal itself, so every
block can be a separate FSDP2 unit whose weights are gathered only while it runs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlrepro.model.attention import CausalAttention
from nlrepro.model.cms import CMSState, ContinuumMemory
from nlrepro.model.combine import AttentionMixer, MemoryAsGate, MixerState
from nlrepro.model.config import CMSLevel, InContextConfig, ModelConfig, base_chunk, check_levels
from nlrepro.model.inner import InnerContext, UpdateStats
from nlrepro.model.layers import RMSNorm
from nlrepro.model.memory import NeuralMemory
from nlrepro.model.self_modifying import SelfModifyingMemory
from nlrepro.model.teach import teach_signal, teach_update_signal


@dataclass
class LayerState:
    mixer: MixerState
    ffn: CMSState


@dataclass
class PendingTeach:
    """The last step's tokens, residual stream entering the final norm, and logits (the
    teach signal reuses them instead of recomputing the vocabulary projection)."""

    tokens: Tensor
    hidden: Tensor
    logits: Tensor


@dataclass
class ModelState:
    """Everything a sequence has written so far; fast weights broadcast over the batch
    until their first update (leading dim 1)."""

    # Absolute position of the next token.
    pos: int
    # Per block; None = fresh (the block builds it from its slow weights when it runs).
    layers: list[Optional[LayerState]]
    # The last step, whose teach signal needs the next token (hope only).
    pending: Optional[PendingTeach]

    def detach(self) -> "ModelState":
        """The same state cut from the autograd graph (truncated backprop across calls)."""
        return _map_tensors(self, Tensor.detach)


def _map_tensors(obj: Any, fn) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if dataclasses.is_dataclass(obj):
        return type(obj)(**{f.name: _map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj)})
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


@dataclass
class Teach:
    """The teach signal u_t of the previous step (None: teach scale 0, the CMS levels
    still close their chunks), handed to every block's CMS before the next step."""

    u: Optional[Tensor]


class ForwardResult(NamedTuple):
    logits: Tensor
    state: ModelState
    # teach_signal_norm, update_norm/memory, update_norm/selfmod, update_norm/cms<l>:
    # means over the call of per-token / per-update norms (absent when nothing updated).
    stats: dict[str, float]


class Block(nn.Module):
    def __init__(self, mixer: nn.Module, ffn: ContinuumMemory, dim: int, eps: float):
        super().__init__()
        self.mixer_norm = RMSNorm(dim, eps)
        self.mixer = mixer
        self.ffn_norm = RMSNorm(dim, eps)
        self.ffn = ffn

    def initial_state(self) -> LayerState:
        return LayerState(self.mixer.initial_state(), self.ffn.initial_state())

    def forward(self, x: Tensor, state: Optional[LayerState], pos: int, ctx: InnerContext,
                teach: Optional["Teach"] = None) -> tuple[Tensor, LayerState]:
        """One step of the block; ``teach`` (the previous step's teach signal) is absorbed
        by the CMS first, then the step runs on the updated weights."""
        state = self.initial_state() if state is None else state
        if teach is not None:
            state = LayerState(state.mixer, self.ffn.absorb(state.ffn, teach.u, pos, ctx))
        m, mixer_state = self.mixer(self.mixer_norm(x), state.mixer, pos, ctx)
        x = x + m
        f, ffn_state = self.ffn(self.ffn_norm(x), state.ffn, ctx)
        return x + f, LayerState(mixer_state, ffn_state)


def _block(cfg: ModelConfig) -> Block:
    """The one place where the variants differ: the memory in the mixer and the ffn."""
    d, h = cfg.d_model, cfg.n_heads
    attention = None if cfg.attention == "none" else CausalAttention(d, h, cfg.attention, cfg.window, cfg.rope_base)
    if cfg.type == "transformer":
        mixer = AttentionMixer(d, attention)
    elif cfg.type == "titan":
        mixer = MemoryAsGate(d, attention, NeuralMemory(d, h, cfg.memory), cfg.norm_eps)
    else:
        memory = SelfModifyingMemory(d, h, cfg.memory, cfg.selfmod, cfg.init_std)
        mixer = MemoryAsGate(d, attention, memory, cfg.norm_eps)
    if cfg.type == "hope":
        ffn = ContinuumMemory(d, cfg.cms.levels, clip_output=True)
    else:
        ffn = ContinuumMemory(d, (CMSLevel(chunk=None, width=cfg.mlp_width),), clip_output=False)
    return Block(mixer, ffn, d, cfg.norm_eps)


class NestedLM(nn.Module):
    """Transformer++, Titans (MAG) or HOPE, by ``cfg.type``."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, in_context: InContextConfig):
        super().__init__()
        self.cfg, self.in_context = cfg, in_context
        self.step_chunk = base_chunk(cfg)
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(_block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.teaches = any(block.ffn.dynamic for block in self.blocks)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        out_std = std / (2 * self.cfg.n_layers) ** 0.5
        for name, p in self.named_parameters():
            if name.endswith(("mixer.out.weight", ".w2")):
                nn.init.normal_(p, std=out_std)
            elif name.endswith(("weight", ".w1", ".w3")) and p.dim() == 2:
                nn.init.normal_(p, std=std)
        for module in self.modules():
            if hasattr(module, "reset_gates"):
                module.reset_gates()

    def initial_state(self) -> ModelState:
        """A fresh sequence: fast weights equal to the slow parameters, empty caches."""
        return ModelState(0, [block.initial_state() for block in self.blocks], None)

    def fresh_state(self) -> ModelState:
        """A fresh sequence whose blocks build their own state when they first run (what
        ``forward`` starts from: under per-block FSDP2 only a running block's weights
        are whole)."""
        return ModelState(0, [None] * len(self.blocks), None)

    def context(self, teach_scale: float, stats: Optional[UpdateStats] = None) -> InnerContext:
        return InnerContext(float(teach_scale), self.in_context, self.cfg.memory.detach_updates,
                            stats or UpdateStats())

    def forward(self, tokens: Tensor, state: Optional[ModelState] = None, teach_scale: float = 1.0) -> ForwardResult:
        """Logits (B, T, V) for tokens (B, T), looping over base-chunk steps."""
        state = self.fresh_state() if state is None else state
        ctx = self.context(teach_scale)
        outs, start, total = [], 0, tokens.shape[1]
        while start < total:
            n = total - start
            if self.step_chunk is not None:
                n = min(n, self.step_chunk - state.pos % self.step_chunk)
            out, state = self._step(tokens[:, start:start + n], state, ctx)
            outs.append(out)
            start += n
        out = torch.cat(outs, dim=1)
        # A teaching model's steps already hold their logits (the teach signal needs them);
        # the others project the whole stream at once.
        return ForwardResult(out if self.teaches else self.head(out), state, ctx.stats.as_dict())

    def head(self, hidden: Tensor) -> Tensor:
        """Logits of the residual stream: RMSNorm, then the tied embedding."""
        return F.linear(self.final_norm(hidden), self.embed.weight)

    def step(self, tokens: Tensor, state: ModelState, teach_scale: float = 1.0,
             stats: Optional[UpdateStats] = None) -> tuple[Tensor, ModelState]:
        """One recurrence step over tokens (B, n) inside one base chunk (``pos`` aligned)."""
        if self.step_chunk is not None and state.pos % self.step_chunk + tokens.shape[1] > self.step_chunk:
            raise ValueError(f"a step may not cross a multiple of the base chunk {self.step_chunk}")
        out, state = self._step(tokens, state, self.context(teach_scale, stats))
        return (out if self.teaches else self.head(out)), state

    def _step(self, tokens: Tensor, state: ModelState, ctx: InnerContext) -> tuple[Tensor, ModelState]:
        """The new state, and the step's logits (a teaching model) or its residual stream
        entering the final norm (the others: ``forward`` projects all steps at once)."""
        teach = None if state.pending is None else self._teach(state.pending, tokens[:, :1], ctx)
        x = self.embed(tokens)
        new_layers = []
        for block, layer_state in zip(self.blocks, state.layers):
            x, layer_state = block(x, layer_state, state.pos, ctx, teach)
            new_layers.append(layer_state)
        new_state = ModelState(state.pos + tokens.shape[1], new_layers, None)
        if not self.teaches:
            return x, new_state
        logits = self.head(x)
        new_state.pending = PendingTeach(tokens, x, logits)
        return logits, new_state

    def _teach(self, p: PendingTeach, next_token: Tensor, ctx: InnerContext) -> Teach:
        """The previous step's teach signal, now that its last target is known (the
        blocks' CMS levels absorb it before the next step)."""
        if ctx.teach_scale <= 0:
            return Teach(None)
        targets = torch.cat([p.tokens[:, 1:], next_token], dim=1)
        delta = teach_signal(p.hidden, targets, self.final_norm.weight, self.embed.weight,
                             self.final_norm.eps, logits=p.logits)
        ctx.stats.add("teach_signal_norm", delta.norm(dim=-1).mean())
        return Teach(teach_update_signal(delta, ctx.teach_scale, ctx.teach_clip, ctx.stats))


def build_model(cfg: ModelConfig, vocab_size: int,
                in_context: Optional[InContextConfig] = None) -> NestedLM:
    """The model of ``cfg`` (presets already resolved) for a tokenizer of ``vocab_size``;
    ``in_context`` holds the multipliers and clips (default: all 1.0, no clips)."""
    cfg.validate("model")
    in_context = in_context or InContextConfig()
    check_levels(in_context.levels, "teach", cfg)
    return NestedLM(cfg, vocab_size, in_context)

"""The mixers. ``MemoryAsGate`` (Titans §4.2, MAG) is the one mixer of both ``titan`` and
``hope``; ``AttentionMixer`` is the Transformer++ one.

    o = W_o [ norm_a(attn(x)) + sigmoid(x W_g) * norm_m(memory(x)) ]

Both branch outputs are RMS-normalised with learnable weights and the memory branch
passes a sigmoid gate computed from the block input; with ``attention: none`` only the
gated memory branch remains (Titans LMM). ``clip.residual`` (per-token RMS, the same in
training and evaluation) acts on the gated memory branch only, never on attention, so
the three variants' attention paths are treated alike. The two memory variants differ
only in the ``memory`` module they pass in (NeuralMemory or SelfModifyingMemory).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from nlrepro.model.attention import AttentionCache, CausalAttention
from nlrepro.model.inner import InnerContext
from nlrepro.model.layers import RMSNorm


@dataclass
class MixerState:
    """Attention cache (None before the first step or without attention) and memory state."""

    attn: Optional[AttentionCache]
    memory: Any


class MemoryAsGate(nn.Module):
    def __init__(self, dim: int, attention: Optional[CausalAttention], memory: nn.Module, eps: float):
        super().__init__()
        self.attention = attention
        self.memory = memory
        self.attn_norm = RMSNorm(dim, eps) if attention is not None else None
        self.memory_norm = RMSNorm(dim, eps)
        self.gate = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def initial_state(self) -> MixerState:
        return MixerState(None, self.memory.initial_state())

    def forward(self, x: Tensor, state: MixerState, pos: int, ctx: InnerContext) -> tuple[Tensor, MixerState]:
        mem, mem_state = self.memory(x, state.memory, pos, ctx)
        y = ctx.clip_residual("residual_memory", torch.sigmoid(self.gate(x)) * self.memory_norm(mem))
        cache = None
        if self.attention is not None:
            att, cache = self.attention(x, state.attn, pos)
            y = y + self.attn_norm(att)
        return self.out(y), MixerState(cache, mem_state)


class AttentionMixer(nn.Module):
    """The Transformer++ mixer: W_o attn(x)."""

    def __init__(self, dim: int, attention: CausalAttention):
        super().__init__()
        self.attention = attention
        self.out = nn.Linear(dim, dim, bias=False)

    def initial_state(self) -> MixerState:
        return MixerState(None, None)

    def forward(self, x: Tensor, state: MixerState, pos: int, ctx: InnerContext) -> tuple[Tensor, MixerState]:
        att, cache = self.attention(x, state.attn, pos)
        return self.out(att), MixerState(cache, None)

"""Causal rotary attention (full | sliding window) with a bounded key/value cache.

A step attends from its n new tokens to the cached keys of earlier steps plus its own
keys. The cache keeps every earlier key for ``full`` attention and the last
``window - 1`` keys for ``swa``, so a stream of any length runs in bounded memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlrepro.model.layers import merge_heads, split_heads


@dataclass
class AttentionCache:
    """Rotated keys and values of earlier tokens, (B, H, L, dh) each."""

    k: Tensor
    v: Tensor


class Rotary(nn.Module):
    """Rotary position embedding (RoFormer), rotate-half layout, absolute positions."""

    def __init__(self, head_dim: int, base: float):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: Tensor, start: int) -> Tensor:
        """Rotate x (B, H, n, dh) whose first token sits at absolute position ``start``."""
        n = x.shape[2]
        pos = torch.arange(start, start + n, dtype=torch.float64, device=x.device)
        angles = torch.outer(pos, self.inv_freq)
        cos = torch.cat([angles.cos(), angles.cos()], -1).to(x.dtype)
        sin = torch.cat([angles.sin(), angles.sin()], -1).to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class CausalAttention(nn.Module):
    """Multi-head causal attention; returns the merged heads (the mixer owns W_o)."""

    def __init__(self, dim: int, n_heads: int, kind: Literal["full", "swa"], window: int, rope_base: float):
        super().__init__()
        self.n_heads = n_heads
        self.kind = kind
        self.window = window
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.rotary = Rotary(dim // n_heads, rope_base)

    def forward(self, x: Tensor, cache: Optional[AttentionCache], pos: int) -> tuple[Tensor, AttentionCache]:
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = self.rotary(q, pos), self.rotary(k, pos)
        if cache is not None:
            k = torch.cat([cache.k, k], dim=2)
            v = torch.cat([cache.v, v], dim=2)
        n, total = q.shape[2], k.shape[2]
        if total == n and self.kind == "full":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self._mask(n, total, x.device))
        keep = total if self.kind == "full" else min(total, self.window - 1)
        return merge_heads(y), AttentionCache(k[:, :, total - keep:], v[:, :, total - keep:])

    def _mask(self, n: int, total: int, device: torch.device) -> Tensor:
        """Allowed (query, key) pairs; queries are the last n of ``total`` positions."""
        q_pos = torch.arange(total - n, total, device=device)[:, None]
        k_pos = torch.arange(total, device=device)[None, :]
        allowed = k_pos <= q_pos
        if self.kind == "swa":
            allowed &= q_pos - k_pos < self.window
        return allowed

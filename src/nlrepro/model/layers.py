"""Small building blocks shared by every variant: RMSNorm, SwiGLU, causal conv, clips."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """y = g * x / sqrt(mean(x^2) + eps)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class SwiGLU(nn.Module):
    """Static Transformer++ MLP: W2 (silu(W1 x) * (W3 x))."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(width, dim))
        self.w3 = nn.Parameter(torch.empty(width, dim))
        self.w2 = nn.Parameter(torch.empty(dim, width))

    def forward(self, x: Tensor) -> Tensor:
        return swiglu(x, self.w1, self.w3, self.w2)


def swiglu(x: Tensor, w1: Tensor, w3: Tensor, w2: Tensor) -> Tensor:
    """SwiGLU with weights (width, d), (width, d), (d, width), optionally batched in front."""
    if w1.dim() == 2:
        return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)
    return (F.silu(x @ w1.mT) * (x @ w3.mT)) @ w2.mT


def silu_grad(z: Tensor) -> Tensor:
    """d silu(z) / dz = s (1 + z (1 - s)), s = sigmoid(z)."""
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


class CausalConv(nn.Module):
    """Causal depthwise convolution over time (Titans §4.4) that carries its last inputs."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.width = width
        self.weight = nn.Parameter(torch.empty(channels, 1, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -self.width ** -0.5, self.width ** -0.5)

    def forward(self, x: Tensor, tail: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """x (B, n, C); tail (B, width-1, C) = the inputs before x (None = zeros)."""
        if tail is None:
            tail = x.new_zeros(x.shape[0], self.width - 1, x.shape[2])
        xx = torch.cat([tail, x], dim=1)
        n = x.shape[1]
        y = xx[:, :n] * self.weight[:, 0, 0]
        for j in range(1, self.width):              # a sum of shifted copies: faster than conv1d here
            y = y + xx[:, j:j + n] * self.weight[:, 0, j]
        return y, xx[:, xx.shape[1] - (self.width - 1):]


def clip_per_token(x: Tensor, max_norm: Optional[float]) -> Tensor:
    """Scale each vector x[..., :] down to L2 norm <= max_norm (None = no clip)."""
    if max_norm is None:
        return x
    norm = x.norm(dim=-1, keepdim=True)
    return x * (max_norm / norm.clamp_min(max_norm))


def clip_rms(x: Tensor, max_rms: Optional[float]) -> Tensor:
    """Scale each vector x[..., :] down to root-mean-square <= max_rms (None = no clip):
    the L2 clip at max_rms * sqrt(d), so one threshold means the same at every width."""
    if max_rms is None:
        return x
    return clip_per_token(x, max_rms * x.shape[-1] ** 0.5)


def clip_matrix(delta: Tensor, max_norm: Optional[float]) -> Tensor:
    """Scale each matrix delta[..., :, :] down to Frobenius norm <= max_norm (None = no clip)."""
    if max_norm is None:
        return delta
    norm = delta.flatten(-2).norm(dim=-1)[..., None, None]
    return delta * (max_norm / norm.clamp_min(max_norm))


def l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, n, H*dh) -> (B, H, n, dh)."""
    b, n, _ = x.shape
    return x.view(b, n, n_heads, -1).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, n, dh) -> (B, n, H*dh)."""
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)

"""Titans neural long-term memory (LMM), Titans §3, Eqs. 12-16.

The memory M is a residual MLP per head, M(k) = k + W_L s(... s(W_1 k)) (s = SiLU;
depth 1 gives the matrix memory (I + W_1) k). For token t with key k_t, value v_t and
token-dependent gates theta_t (step), eta_t (momentum) and alpha_t (forgetting):

    l(M; x_t) = ||M(k_t) - v_t||^2                               (Eq. 12)
    S_t = eta_t S_{t-1} - theta_t grad l(M'; x_t)                (Eq. 13)
    M_t = M_0 + (1 - alpha_t) (M_{t-1} - M_0) + S_t              (Eq. 14, forgetting to M_0)
    y_t = M'(q_t)                                                (Eq. 15)

where M' is the weights at the start of the token's memory chunk (Eq. 16: all gradients
of a chunk are taken at its start weights, so they are computed at once). With a chunk of
1 token, M' = M_{t-1} and this is exactly the token-level rule.

Two choices make the memory stable by construction (docs/MODEL_DECISIONS.md §2):

* forgetting returns the weights to the sequence's initial (meta-learned) M_0, not to 0:
  for a deep memory 0 is absorbing (W_L = 0 gives W_1 no gradient), M_0 is the prior;
* the step is theta_t (1 - eta_t) / C with theta_t = sigmoid(.) for a chunk of C tokens:
  momentum as a moving average (its gain 1 / (1 - eta) is cancelled), and a chunk's
  summed step below 1 whatever the gates learn. Inside a chunk every gradient is taken
  at the chunk-start weights, so a chunk acts like one gradient step of that summed size;
  for the matrix memory (curvature 2 along a unit key) that step is stable by
  construction. For a deep memory the curvature also grows with the weights, so its
  bound is measured (the stream test) rather than proven.

A recurrence step sees n <= chunk tokens inside one memory chunk. ``LMMState.read`` holds
M', ``run`` holds M_t after the chunk's tokens so far and ``momentum`` S_t; a step folds
its n tokens into (run, momentum) in closed form (``scan_coefficients``), and the last
step of a chunk commits run to read. Gradients of the MLP are analytic and vectorised
over tokens (``weighted_grads``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlrepro.model.config import MemoryConfig
from nlrepro.model.inner import InnerContext, detached_write, frobenius
from nlrepro.model.layers import CausalConv, l2_normalize, merge_heads, silu_grad, split_heads


@dataclass
class LMMState:
    """Fast weights of one memory, each (B or 1, H, out, in)."""

    # M_0: the sequence's initial weights (the slow parameters), where forgetting returns.
    init: tuple[Tensor, ...]
    # M' : the weights the current chunk reads and differentiates at.
    read: tuple[Tensor, ...]
    # M_t: the weights after the chunk's tokens so far (Eq. 14).
    run: tuple[Tensor, ...]
    # S_t: the momentum (Eq. 13).
    momentum: tuple[Tensor, ...]


class MemoryMLP(nn.Module):
    """The slow (outer) initial weights M_0 of a per-head residual MLP memory."""

    def __init__(self, n_heads: int, dim: int, depth: int, expansion: float):
        super().__init__()
        hidden = max(1, round(expansion * dim))
        dims = [dim] + [hidden] * (depth - 1) + [dim]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(n_heads, dims[i + 1], dims[i])) for i in range(depth)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        last = len(self.weights) - 1
        for i, w in enumerate(self.weights):
            nn.init.normal_(w, std=0.02 if i == last else w.shape[-1] ** -0.5)

    def initial_state(self) -> LMMState:
        weights = tuple(w.unsqueeze(0) for w in self.weights)
        return LMMState(weights, weights, weights, tuple(torch.zeros_like(w) for w in weights))


def mlp_forward(weights: tuple[Tensor, ...], x: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """M(x) for x (B, H, n, dim); also each layer's (input, pre-activation) for backprop."""
    acts = []
    h = x
    for i, w in enumerate(weights):
        z = h @ w.mT
        acts.append((h, z))
        h = F.silu(z) if i < len(weights) - 1 else z
    return x + h, acts


def weighted_grads(weights: tuple[Tensor, ...], acts: list[tuple[Tensor, Tensor]], err: Tensor,
                   token_weights: Tensor) -> list[Tensor]:
    """sum_t w_jt dl_t/dW_i for each layer i, given err = dl_t/dM(k_t) (B, H, n, dim) and
    token weights (B, H, J, n); returns (B, H, J, out, in) per layer."""
    grads = [None] * len(weights)
    g = err
    for i in range(len(weights) - 1, -1, -1):
        h, _ = acts[i]
        grads[i] = (g.unsqueeze(2) * token_weights[..., None]).mT @ h.unsqueeze(2)
        if i > 0:
            g = (g @ weights[i]) * silu_grad(acts[i - 1][1])
    return grads


def scan_coefficients(theta: Tensor, log_eta: Tensor, log_retain: Tensor) -> tuple[Tensor, ...]:
    """Closed form of Eqs. 13-14 over n tokens whose gradients g_t share one point:

        S_n = E S_0 - sum_t wS_t g_t,   M_n = A M_0 + c S_0 - sum_t wM_t g_t

    with eta_t = exp(log_eta_t) and 1 - alpha_t = exp(log_retain_t); inputs (B, H, n).
    Returns A, c, E (B, H, 1, 1) and the token weights wM, wS stacked as (B, H, 2, n).
    """
    cum_e = log_eta.cumsum(-1)
    cum_a = log_retain.cumsum(-1)
    after_a = torch.exp(cum_a[..., -1:] - cum_a)                         # prod_{s>t} (1-alpha_s)
    diff = cum_e[..., :, None] - cum_e[..., None, :]                     # [t, r]: sum_{r<s<=t} log eta_s
    causal = torch.ones(diff.shape[-2:], dtype=torch.bool, device=diff.device).tril()
    momentum_carry = torch.exp(diff.masked_fill(~causal, -math.inf))     # prod_{r<s<=t} eta_s
    w_m = theta * torch.einsum("bht,bhtr->bhr", after_a, momentum_carry)
    w_s = theta * torch.exp(cum_e[..., -1:] - cum_e)
    c = (after_a * cum_e.exp()).sum(-1)
    return (cum_a[..., -1].exp()[..., None, None], c[..., None, None],
            cum_e[..., -1].exp()[..., None, None], torch.stack([w_m, w_s], dim=2))


def lmm_write(state: LMMState, acts: list[tuple[Tensor, Tensor]], err: Tensor, theta: Tensor,
              log_eta: Tensor, log_retain: Tensor, detach: bool) -> LMMState:
    """Fold n tokens into (run, momentum), Eqs. 13-14 with gradients at ``state.read``;
    the retention acts on the distance from ``state.init`` (forgetting returns to M_0).

    ``acts``/``err`` come from M'(k) (``mlp_forward``) and err = dl/dM'(k) = 2 (M'(k) - v).
    """
    with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
        decay, carry, mom_decay, token_w = scan_coefficients(theta, log_eta, log_retain)
        grads = weighted_grads(state.read, acts, err, token_w)
        run = tuple(m0 + decay * (m - m0) + carry * s - g[:, :, 0]
                    for m0, m, s, g in zip(state.init, state.run, state.momentum, grads))
        momentum = tuple(mom_decay * s - g[:, :, 1] for s, g in zip(state.momentum, grads))
    return LMMState(state.init, state.read, detached_write(state.run, run, detach), momentum)


def lmm_commit(state: LMMState, ctx: InnerContext) -> tuple[LMMState, Tensor]:
    """End of a memory chunk: read <- read + clip(run - read) (``clip.inner``); returns
    the update norm."""
    deltas = ctx.clip_updates(tuple(r - m for r, m in zip(state.run, state.read)))
    read = tuple(m + d for m, d in zip(state.read, deltas))
    return LMMState(state.init, read, read, state.momentum), frobenius(deltas)


@dataclass
class NeuralMemoryState:
    """State of a NeuralMemory: the LMM weights and the q/k/v convolution's last inputs."""

    lmm: LMMState
    conv: Optional[Tensor]


class NeuralMemory(nn.Module):
    """Titans LMM with static projections: k, v, q = SiLU(conv(x W)), q and k L2-normalised
    per head (Titans §4.4); theta, eta, alpha = sigmoid(x W_gate + b) per head and token.

    The step is theta_t (1 - eta_t) / memory.chunk (module docstring).
    ``teach_scale * teach.levels.memory`` = s multiplies theta_t and the forgetting's log
    retention (1 - alpha_t -> (1 - alpha_t)^s): at s = 0 the memory never moves.
    """

    def __init__(self, dim: int, n_heads: int, cfg: MemoryConfig):
        super().__init__()
        self.n_heads = n_heads
        self.chunk = cfg.chunk
        self.step_init = cfg.step_init
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.conv = CausalConv(3 * dim, cfg.conv_width)
        self.to_gates = nn.Linear(dim, 3 * n_heads)
        self.mlp = MemoryMLP(n_heads, dim // n_heads, cfg.depth, cfg.expansion)

    def reset_gates(self) -> None:
        """Start at the configured step (``memory.step_init`` = sigmoid(b_theta), the share
        of the largest stable chunk step), momentum eta = 0.5 and forgetting alpha = 0.0025."""
        nn.init.zeros_(self.to_gates.weight)
        bias = self.to_gates.bias.detach().view(3, self.n_heads)
        bias[0].fill_(math.log(self.step_init / (1 - self.step_init)))
        bias[1].fill_(0.0)
        bias[2].fill_(-6.0)

    def initial_state(self) -> NeuralMemoryState:
        return NeuralMemoryState(self.mlp.initial_state(), None)

    def forward(self, x: Tensor, state: NeuralMemoryState, pos: int,
                ctx: InnerContext) -> tuple[Tensor, NeuralMemoryState]:
        qkv, conv = self.conv(self.to_qkv(x), state.conv)
        q, k, v = (split_heads(t, self.n_heads) for t in F.silu(qkv).chunk(3, dim=-1))
        q, k = l2_normalize(q), l2_normalize(k)
        theta, eta, alpha = self.to_gates(x).transpose(1, 2).chunk(3, dim=1)   # (B, H, n) each
        lmm = state.lmm
        n = x.shape[1]
        out, acts = mlp_forward(lmm.read, torch.cat([q, k], dim=2))
        y = out[:, :, :n]
        s = ctx.scale("memory")
        if s > 0:
            key_acts = [(h[:, :, n:], z[:, :, n:]) for h, z in acts]
            err = 2 * (out[:, :, n:] - v)
            step = (s / self.chunk) * torch.sigmoid(theta) * torch.sigmoid(-eta)   # theta_t (1 - eta_t) / C
            lmm = lmm_write(lmm, key_acts, err, step, F.logsigmoid(eta), s * F.logsigmoid(-alpha), ctx.detach)
        if (pos + n) % self.chunk == 0:
            lmm, norm = lmm_commit(lmm, ctx)
            if s > 0:
                ctx.stats.add("update_norm/memory", norm)
        return merge_heads(y), NeuralMemoryState(lmm, conv)

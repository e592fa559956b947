"""HOPE's self-modifying Titans (Nested Learning §3, Fig. 3; arXiv §8.1 as reconstructed).

The key, value, step-size and retention projections are themselves fast memories
M_k, M_v, M_eta, M_alpha (per head, one fused matrix P_h of shape (2 dh + 2, d) per
head), applied to the block input x_t: k_t = M_k x_t, v_t = M_v x_t,
eta_t = sigmoid(M_eta x_t + b_eta), a_t = sigmoid(M_alpha x_t + b_alpha) (retention,
1 - forgetting). q is a plain projection. The main memory M_mem is the Titans LMM of
``memory.py`` (deep MLP, momentum, forgetting), reading keys SiLU(conv(k)), values
SiLU(conv(v)), queries SiLU(conv(x W_q)) with theta_t = eta_t and 1 - alpha_t = a_t.

Every memory generates its own target from the value (Eq. 85 of the arXiv version). The
plain reading v_hat = M(v_t) is unstable by construction: P v_t grows with |P|, so each
token multiplies P by a factor that grows with |P| (NaN within ~500 tokens). We use the
**norm-matched target** (``selfmod.target: matched``, default)

    v_hat_t = M(v_t) * ||M(kbar_t)|| / ||M(v_t)||

the memory's own image of the value, at the norm of its own read at the key: the target
says *where* to point the read, never to make it larger (``selfmod.rule: plain`` keeps
the plain reading, for reproducing the blow-up). Update rule of the projection
memories (pinned by ``test_model_self_modifying``), per head h with the normalised key
kbar_t = k_t / ||k_t||, forgetting back to the slow projection P_0:

    P <- P_0 + a_t (P - P_0) - eta_t (P kbar_t - v_hat_t) kbar_t^T

the gated delta rule (one decayed gradient step on 1/2 ||P kbar - v_hat||^2, target held
fixed). Token by token with eta_t <= a_t the delta step cannot raise ||P||_F (the new
read at kbar is a convex mix of two vectors of the old read's norm, the rest of P is
untouched) and the forgetting is a convex mix with P_0, so ||P_t||_F <= ||P_0||_F;
P = 0 is not absorbing because forgetting returns to P_0. The step is
eta_t = sigmoid(.) / C for chunks of C tokens (as the LMM's theta), and inside a chunk of
``selfmod.chunk`` tokens every error is taken at the chunk-start P (Eq. 16 chunking), so
the chunk's update is one weighted sum of outer products.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlrepro.model.config import MemoryConfig, SelfModConfig
from nlrepro.model.inner import InnerContext, detached_write, frobenius
from nlrepro.model.layers import CausalConv, l2_normalize, merge_heads, split_heads
from nlrepro.model.memory import LMMState, MemoryMLP, lmm_commit, lmm_write, mlp_forward


@dataclass
class ProjectionState:
    """Fused fast projections P (B or 1, H, 2 dh + 2, d): init = P_0 (the slow
    parameter), read = chunk start, run = now."""

    init: Tensor
    read: Tensor
    run: Tensor


@dataclass
class SelfModState:
    proj: ProjectionState
    lmm: LMMState
    conv: Optional[Tensor]


def matched_target(read_at_key: Tensor, image_of_value: Tensor, target: str, eps: float = 1e-6) -> Tensor:
    """The self-generated target: M(v) rescaled to ||M(kbar)|| (``matched``) or M(v) as it
    is (``raw``); vectors along the last dim."""
    if target == "raw":
        return image_of_value
    scale = read_at_key.norm(dim=-1, keepdim=True) / image_of_value.norm(dim=-1, keepdim=True).clamp_min(eps)
    return image_of_value * scale


def delta_rule_write(init: Tensor, read: Tensor, run: Tensor, kbar: Tensor, v: Tensor, eta: Tensor,
                     log_retain: Tensor, target: str = "matched") -> Tensor:
    """Fold n tokens into ``run`` with every target and error taken at ``read``:

        run <- P_0 + (prod_t a_t) (run - P_0) - sum_t (prod_{s>t} a_s) eta_t e_t kbar_t^T,
        e_t = read kbar_t - v_hat_t,   v_hat_t = matched_target(read kbar_t, read v_t)

    init = P_0, read, run (B|1, H, o, d); kbar, v (B, n, d); eta, log_retain (B, H, n).
    """
    cum = log_retain.cumsum(-1)
    weight = eta * torch.exp(cum[..., -1:] - cum)                       # (B, H, n)
    at_key = kbar.unsqueeze(1) @ read.mT                                 # (B, H, n, o)
    err = at_key - matched_target(at_key, v.unsqueeze(1) @ read.mT, target)
    decay = cum[..., -1].exp()[..., None, None]
    return init + decay * (run - init) - (err * weight[..., None]).mT @ kbar.unsqueeze(1)


class SelfModifyingMemory(nn.Module):
    """Titans memory whose k, v, eta, alpha projections are updated in context."""

    def __init__(self, dim: int, n_heads: int, memory: MemoryConfig, selfmod: SelfModConfig, init_std: float):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.chunk = memory.chunk
        self.proj_chunk = selfmod.chunk
        self.step_init = memory.step_init
        self.plain = selfmod.rule == "plain"
        self.target = "raw" if self.plain else "matched"
        self.init_std = init_std
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Parameter(torch.empty(n_heads, 2 * self.head_dim + 2, dim))
        self.gate_bias = nn.Parameter(torch.empty(2, n_heads))
        self.to_momentum = nn.Linear(dim, n_heads)
        self.conv = CausalConv(3 * dim, memory.conv_width)
        self.mlp = MemoryMLP(n_heads, self.head_dim, memory.depth, memory.expansion)

    def reset_gates(self) -> None:
        """Start at sigmoid(b_eta) = ``memory.step_init``, retention a = 0.9975, momentum
        0.5 (as NeuralMemory)."""
        nn.init.normal_(self.proj, std=self.init_std)
        with torch.no_grad():
            self.gate_bias[0].fill_(math.log(self.step_init / (1 - self.step_init)))
            self.gate_bias[1].fill_(6.0)
        nn.init.zeros_(self.to_momentum.weight)
        nn.init.zeros_(self.to_momentum.bias)

    def initial_state(self) -> SelfModState:
        proj = self.proj.unsqueeze(0)
        return SelfModState(ProjectionState(proj, proj, proj), self.mlp.initial_state(), None)

    def forward(self, x: Tensor, state: SelfModState, pos: int,
                ctx: InnerContext) -> tuple[Tensor, SelfModState]:
        n, dh = x.shape[1], self.head_dim
        proj = state.proj
        out = x.unsqueeze(1) @ proj.read.mT                                 # (B, H, n, 2dh+2)
        k_raw, v_raw = merge_heads(out[..., :dh]), merge_heads(out[..., dh:2 * dh])
        eta = torch.sigmoid(out[..., 2 * dh] + self.gate_bias[0, :, None])
        log_retain = F.logsigmoid(out[..., 2 * dh + 1] + self.gate_bias[1, :, None])

        qkv, conv = self.conv(torch.cat([self.to_q(x), k_raw, v_raw], dim=-1), state.conv)
        q, k, v = (split_heads(t, self.n_heads) for t in F.silu(qkv).chunk(3, dim=-1))
        q, k = l2_normalize(q), l2_normalize(k)
        lmm = state.lmm
        mem_out, acts = mlp_forward(lmm.read, torch.cat([q, k, v], dim=2))
        y = mem_out[:, :, :n]

        s_mem, s_proj = ctx.scale("memory"), ctx.scale("selfmod")
        if s_mem > 0:
            key_acts = [(h[:, :, n:2 * n], z[:, :, n:2 * n]) for h, z in acts]
            at_key = mem_out[:, :, n:2 * n]
            err = 2 * (at_key - matched_target(at_key, mem_out[:, :, 2 * n:], self.target))
            momentum_gate = self.to_momentum(x).transpose(1, 2)
            log_momentum = F.logsigmoid(momentum_gate)
            # As the LMM: theta_t = eta_t (1 - momentum_t) / C (bounded); plain: eta_t.
            step = s_mem * eta if self.plain else (s_mem / self.chunk) * eta * torch.sigmoid(-momentum_gate)
            lmm = lmm_write(lmm, key_acts, err, step, log_momentum,
                            s_mem * log_retain, ctx.detach)
        if (pos + n) % self.chunk == 0:
            lmm, norm = lmm_commit(lmm, ctx)
            if s_mem > 0:
                ctx.stats.add("update_norm/memory", norm)

        if s_proj > 0:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not ctx.detach):
                step = s_proj if self.plain else s_proj / self.proj_chunk
                anchor = torch.zeros_like(proj.init) if self.plain else proj.init
                run = delta_rule_write(anchor, proj.read, proj.run, l2_normalize(k_raw), v_raw,
                                       step * eta, s_proj * log_retain, self.target)
            proj = ProjectionState(proj.init, proj.read, detached_write((proj.run,), (run,), ctx.detach)[0])
        if (pos + n) % self.proj_chunk == 0:
            (delta,) = ctx.clip_updates((proj.run - proj.read,))
            read = proj.read + delta
            proj = ProjectionState(proj.init, read, read)
            if s_proj > 0:
                ctx.stats.add("update_norm/selfmod", frobenius((delta,)))
        return merge_heads(y), SelfModState(proj, lmm, conv)

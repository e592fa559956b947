"""Titans LMM (Eqs. 12-16): the chunked, vectorised code against plain float64
references that loop over tokens and take gradients with autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlrepro.model.config import InContextConfig, MemoryConfig
from nlrepro.model.inner import InnerContext
from nlrepro.model.layers import l2_normalize, split_heads
from nlrepro.model.memory import NeuralMemory


DIM, HEADS, BATCH, LENGTH = 8, 2, 2, 12


def memory_module(chunk: int, depth: int) -> NeuralMemory:
    torch.manual_seed(0)
    memory = NeuralMemory(DIM, HEADS, MemoryConfig(chunk=chunk, depth=depth)).double()
    with torch.no_grad():
        memory.to_gates.weight.normal_(std=0.3)          # token-dependent gates
        memory.to_gates.bias.copy_(torch.tensor([-2.0, -2.0, 1.0, 1.0, -2.0, -2.0]))
    return memory


def context(scale: float = 1.0) -> InnerContext:
    return InnerContext(scale, InContextConfig(), detach=False)


def run_module(memory: NeuralMemory, x: torch.Tensor, step: int, scale: float = 1.0):
    """Feed x in steps of ``step`` tokens; returns outputs (B, T, d) and the final LMM state."""
    state, outs = memory.initial_state(), []
    for start in range(0, x.shape[1], step):
        y, state = memory(x[:, start:start + step], state, start, context(scale))
        outs.append(y)
    return torch.cat(outs, dim=1), state.lmm


def memory_apply(weights, x):
    """M(x) = x + W_L s(... s(W_1 x)) for one head: weights list of (out, in), x (in,)."""
    h = x
    for i, w in enumerate(weights):
        h = w @ h
        if i < len(weights) - 1:
            h = F.silu(h)
    return x + h


def reference(memory: NeuralMemory, x: torch.Tensor, chunk: int, scale: float = 1.0):
    """Eqs. 13-15 token by token; gradients at the weights the token's chunk started with,
    step theta (1 - eta) / chunk, forgetting back to the initial weights M_0."""
    qkv = F.silu(F.conv1d(F.pad(memory.to_qkv(x).transpose(1, 2), (memory.conv.width - 1, 0)),
                          memory.conv.weight, groups=3 * DIM)).transpose(1, 2)
    q, k, v = (split_heads(t, HEADS) for t in qkv.chunk(3, dim=-1))
    q, k = l2_normalize(q), l2_normalize(k)
    gates = torch.sigmoid(memory.to_gates(x)).view(BATCH, LENGTH, 3, HEADS)
    y = torch.zeros(BATCH, HEADS, LENGTH, DIM // HEADS, dtype=x.dtype)
    finals = []
    for b in range(BATCH):
        for h in range(HEADS):
            init = [w[h].detach().clone() for w in memory.mlp.weights]
            run = [w.clone() for w in init]
            momentum = [torch.zeros_like(w) for w in run]
            for t in range(LENGTH):
                if t % chunk == 0:
                    read = [w.clone().requires_grad_() for w in run]
                theta, eta, alpha = (gates[b, t, i, h].detach() for i in range(3))
                theta, retain = scale * theta * (1 - eta) / chunk, (1 - alpha) ** scale
                y[b, h, t] = memory_apply(read, q[b, h, t]).detach()
                loss = (memory_apply(read, k[b, h, t].detach()) - v[b, h, t].detach()).pow(2).sum()   # Eq. 12
                grads = torch.autograd.grad(loss, read)
                momentum = [eta * s - theta * g for s, g in zip(momentum, grads)]                      # Eq. 13
                run = [m0 + retain * (m - m0) + s for m0, m, s in zip(init, run, momentum)]          # Eq. 14
            finals.append((b, h, run, momentum))
    return y, finals


@pytest.mark.parametrize("chunk, step, depth", [(1, 1, 1), (1, 1, 2), (4, 4, 2), (4, 2, 3), (12, 4, 2)])
def test_chunked_memory_equals_the_token_by_token_reference(chunk, step, depth):
    memory = memory_module(chunk, depth)
    x = torch.randn(BATCH, LENGTH, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out, state = run_module(memory, x, step)
    y, finals = reference(memory, x, chunk)
    torch.testing.assert_close(out, y.transpose(1, 2).reshape(BATCH, LENGTH, DIM), rtol=0, atol=1e-12)
    for b, h, run, momentum in finals:
        for i in range(depth):
            torch.testing.assert_close(state.read[i][b, h], run[i], rtol=0, atol=1e-12)
            torch.testing.assert_close(state.momentum[i][b, h], momentum[i], rtol=0, atol=1e-12)


def test_memory_moves_with_the_teach_scale_and_not_at_zero():
    memory = memory_module(4, 2)
    x = torch.randn(BATCH, LENGTH, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out, state = run_module(memory, x, 4, scale=0.3)
    y, finals = reference(memory, x, 4, scale=0.3)
    torch.testing.assert_close(out, y.transpose(1, 2).reshape(BATCH, LENGTH, DIM), rtol=0, atol=1e-12)
    _, frozen = run_module(memory, x, 4, scale=0.0)
    for w, w0 in zip(frozen.read, memory.mlp.weights):
        torch.testing.assert_close(w.expand(BATCH, -1, -1, -1), w0.expand(BATCH, -1, -1, -1), rtol=0, atol=0)
    assert not torch.allclose(state.read[0], frozen.read[0])


def test_inner_clip_bounds_each_committed_update():
    memory = memory_module(4, 2)
    x = torch.randn(BATCH, LENGTH, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ctx = InnerContext(1.0, InContextConfig(inner_clip=1e-3), detach=False)
    state = memory.initial_state()
    _, state = memory(x[:, :4], state, 0, ctx)
    for w, w0 in zip(state.lmm.read, memory.mlp.weights):
        assert ((w - w0).flatten(-2).norm(dim=-1) <= 1e-3 + 1e-15).all()
        assert ((w - w0).flatten(-2).norm(dim=-1) > 0.999e-3).all()

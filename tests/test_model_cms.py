"""Continuum Memory System (Eqs. 30-31): update timing, the static chain, one update by hand."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


from nlrepro.model.config import CMSConfig, CMSLevel, InContextConfig, MemoryConfig, ModelConfig, SelfModConfig
from nlrepro.model.lm import build_model
from nlrepro.model.cms import CMSState, ContinuumMemory
from nlrepro.model.inner import InnerContext


def context(scale: float = 1.0) -> InnerContext:
    return InnerContext(scale, InContextConfig(), detach=False)


def test_cms_level_changes_its_fast_weights_exactly_at_multiples_of_its_chunk():
    cfg = ModelConfig(type="hope", preset=None, d_model=16, n_layers=2, n_heads=2,
                      memory=MemoryConfig(chunk=4), selfmod=SelfModConfig(chunk=4),
                      cms=CMSConfig(levels=(CMSLevel(chunk=4, width=8), CMSLevel(chunk=12, width=8),
                                            CMSLevel(chunk=None, width=8))))
    torch.manual_seed(0)
    model = build_model(cfg, 32).double()
    x = torch.randint(0, 32, (2, 30), generator=torch.Generator().manual_seed(1))
    state = model.initial_state()
    changed_at = {0: [], 1: []}
    for start in range(0, 30, 4):
        before = state.layers[1].ffn.weights
        _, state = model.step(x[:, start:start + 4], state, teach_scale=1.0)
        after = state.layers[1].ffn.weights
        assert after[2] is None                                     # the static level has no fast weights
        for level in (0, 1):
            if any(not torch.equal(a, b) for a, b in zip(after[level], before[level])):
                changed_at[level].append(start)
    # A chunk's update needs its last token's target, the next chunk's first token: it is
    # applied at the start of the step that begins at the boundary, before that step reads.
    assert changed_at == {0: [4, 8, 12, 16, 20, 24, 28], 1: [12, 24]}


def plain_mlp_chain(levels, x):
    """y = sum_l o_l with o_l = W2 (silu(W1 z) * W3 z), z_l = z_{l-1} + o_l."""
    z, total = x, 0
    for level in levels:
        out = F.linear(F.silu(F.linear(z, level.w1)) * F.linear(z, level.w3), level.w2)
        total, z = total + out, z + out
    return total


def test_a_chain_of_static_levels_is_a_plain_mlp():
    torch.manual_seed(0)
    cms = ContinuumMemory(6, (CMSLevel(chunk=None, width=5), CMSLevel(chunk=None, width=3)), clip_output=True).double()
    for p in cms.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    state, outs = cms.initial_state(), []
    for start in range(0, 9, 3):
        y, state = cms(x[:, start:start + 3], state, context())
        state = cms.absorb(state, torch.randn(2, 3, 6, dtype=torch.float64), start + 3, context())
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, dim=1), plain_mlp_chain(cms.levels, x), rtol=0, atol=1e-14)
    assert state.weights == (None, None)


def silu(a: float) -> float:
    return a / (1 + math.exp(-a))


def test_one_level_update_equals_a_hand_computation():
    """d = 2, width 1: o = c h with h = silu(a . z) (b . z); <o, u> = h (c . u)."""
    a, b, c = [0.3, -0.2], [0.5, 0.4], [0.7, -0.1]
    zs = [[1.0, 2.0], [-0.5, 0.25]]
    us = [[0.2, -0.3], [0.1, 0.4]]
    lr = 0.05
    cms = ContinuumMemory(2, (CMSLevel(chunk=2, width=1, lr=lr),), clip_output=False).double()
    with torch.no_grad():
        cms.levels[0].w1.copy_(torch.tensor([a], dtype=torch.float64))
        cms.levels[0].w3.copy_(torch.tensor([b], dtype=torch.float64))
        cms.levels[0].w2.copy_(torch.tensor([[c[0]], [c[1]]], dtype=torch.float64))
    z, u = torch.tensor([zs], dtype=torch.float64), torch.tensor([us], dtype=torch.float64)
    _, state = cms(z, cms.initial_state(), context())
    state = cms.absorb(state, u, 2, context())

    grad_a, grad_b, grad_c = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
    for zt, ut in zip(zs, us):
        pa = a[0] * zt[0] + a[1] * zt[1]
        pb = b[0] * zt[0] + b[1] * zt[1]
        cu = c[0] * ut[0] + c[1] * ut[1]
        s = 1 / (1 + math.exp(-pa))
        dsilu = s * (1 + pa * (1 - s))
        for i in range(2):
            grad_a[i] += cu * pb * dsilu * zt[i]
            grad_b[i] += cu * silu(pa) * zt[i]
            grad_c[i] += ut[i] * silu(pa) * pb
    w1, w3, w2 = state.weights[0]
    expect = lambda w, g: torch.tensor([[wi - lr * gi for wi, gi in zip(w, g)]], dtype=torch.float64)
    torch.testing.assert_close(w1[0], expect(a, grad_a), rtol=0, atol=1e-15)
    torch.testing.assert_close(w3[0], expect(b, grad_b), rtol=0, atol=1e-15)
    torch.testing.assert_close(w2[0], expect(c, grad_c).T, rtol=0, atol=1e-15)


def test_retention_pulls_the_fast_weights_back_toward_the_slow_ones():
    """theta <- theta_0 + rho^s (theta - theta_0) - step: two updates by hand, with
    s = teach_scale * teach.levels.cms0 in the exponent."""
    rho, lr, s = 0.5, 0.1, 0.8
    cms = ContinuumMemory(3, (CMSLevel(chunk=2, width=2, lr=lr, retention=rho),), clip_output=False).double()
    plain = ContinuumMemory(3, (CMSLevel(chunk=2, width=2, lr=lr),), clip_output=False).double()
    for p in cms.parameters():
        torch.nn.init.normal_(p, std=0.5)
    plain.load_state_dict(cms.state_dict())
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 4, 3, dtype=torch.float64, generator=g)
    u = torch.randn(1, 4, 3, dtype=torch.float64, generator=g)
    ctx = InnerContext(1.0, InContextConfig(levels={"cms0": s}), detach=False)
    w0 = cms.levels[0].w1.detach()
    state = cms.initial_state()
    expect = w0
    for t in (0, 2):
        # the plain rule's step from the same weights is the update's gradient part
        plain_state = CMSState(state.weights, state.accum, state.pending)
        _, plain_state = plain(z[:, t:t + 2], plain_state, ctx)
        step = plain.absorb(plain_state, u[:, t:t + 2], t + 2, ctx).weights[0][0] - state.weights[0][0]
        expect = w0 + rho ** s * (expect - w0) + step
        _, state = cms(z[:, t:t + 2], state, ctx)
        state = cms.absorb(state, u[:, t:t + 2], t + 2, ctx)
        torch.testing.assert_close(state.weights[0][0], expect, rtol=0, atol=1e-14)
    assert not torch.allclose(state.weights[0][0], plain_state.weights[0][0])


def test_cms_update_waits_for_the_chunk_boundary_and_scales_per_level():
    cms = ContinuumMemory(4, (CMSLevel(chunk=4, width=3, lr=0.1),), clip_output=False).double()
    for p in cms.parameters():
        torch.nn.init.normal_(p, std=0.5)
    z = torch.randn(1, 4, 4, dtype=torch.float64)
    u = torch.randn(1, 4, 4, dtype=torch.float64)
    _, state = cms(z[:, :2], cms.initial_state(), context())
    state = cms.absorb(state, u[:, :2], 2, context())
    assert state.weights[0][0].shape[0] == 1 and torch.equal(state.weights[0][0][0], cms.levels[0].w1)
    _, state = cms(z[:, 2:], state, context())
    full = cms.absorb(state, u[:, 2:], 4, context()).weights[0][0]
    half_ctx = InnerContext(1.0, InContextConfig(levels={"cms0": 0.5}), detach=False)
    half = cms.absorb(state, u[:, 2:], 4, half_ctx).weights[0][0]
    torch.testing.assert_close(half - cms.levels[0].w1, 0.5 * (full - cms.levels[0].w1), rtol=1e-12, atol=1e-15)

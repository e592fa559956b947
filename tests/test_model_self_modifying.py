"""HOPE's self-modifying update rule (docs/MODEL_DECISIONS.md), pinned by hand:

    P <- a P - eta (P kbar - P v) kbar^T = P (a I - eta kbar kbar^T) + eta (P v) kbar^T
"""
from __future__ import annotations

import math

import torch

from nlrepro.model.config import ClipConfig, MemoryConfig, SelfModConfig, TeachConfig
from nlrepro.model.inner import InnerContext
from nlrepro.model.layers import l2_normalize
from nlrepro.model.self_modifying import SelfModifyingMemory, delta_rule_write


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_one_token_update_equals_a_hand_computation():
    p = [[0.5, -1.0], [2.0, 0.25]]                  # one head, 2 outputs, d = 2
    k = [3.0, 4.0]                                 # kbar = (0.6, 0.8)
    v = [1.0, -2.0]
    eta, a = 0.1, 0.9
    kbar = [0.6, 0.8]
    expect = []
    for row in p:
        v_hat = row[0] * v[0] + row[1] * v[1]                    # target P v
        pk = row[0] * kbar[0] + row[1] * kbar[1]
        expect.append([a * row[j] - eta * (pk - v_hat) * kbar[j] for j in range(2)])
    read = f64([[p]])
    out = delta_rule_write(read, read, l2_normalize(f64([[k]])), f64([[v]]), f64([[[eta]]]),
                           f64([[[math.log(a)]]]))
    torch.testing.assert_close(out[0, 0], f64(expect), rtol=0, atol=1e-15)
    # The same rule in the paper's layout: P (a I - eta kbar kbar^T) + eta v_hat kbar^T.
    pm, kb = f64(p), f64(kbar)
    paper = pm @ (a * torch.eye(2, dtype=torch.float64) - eta * torch.outer(kb, kb)) + eta * torch.outer(pm @ f64(v), kb)
    torch.testing.assert_close(out[0, 0], paper, rtol=0, atol=1e-15)


def test_two_tokens_in_one_chunk_use_the_chunk_start_projection():
    p = f64([[1.0, 0.5]])
    k1, v1, k2, v2 = f64([1.0, 0.0]), f64([0.5, 0.5]), f64([0.0, 1.0]), f64([-1.0, 2.0])
    (e1, a1), (e2, a2) = (0.2, 0.9), (0.3, 0.8)
    expect = a1 * a2 * p - a2 * e1 * torch.outer(p @ (k1 - v1), k1) - e2 * torch.outer(p @ (k2 - v2), k2)
    out = delta_rule_write(p[None, None], p[None, None], torch.stack([k1, k2])[None], torch.stack([v1, v2])[None],
                           f64([[[e1, e2]]]), f64([[[math.log(a1), math.log(a2)]]]).reshape(1, 1, 2))
    torch.testing.assert_close(out[0, 0], expect, rtol=0, atol=1e-15)


def test_module_projections_follow_the_rule_token_by_token():
    """With selfmod.chunk = 1 the module's fused projections equal the rule applied per
    token to its own k_t, v_t, eta_t, a_t, scaled by teach_scale * teach.levels.selfmod."""
    torch.manual_seed(0)
    dim, heads = 8, 2
    module = SelfModifyingMemory(dim, heads, MemoryConfig(chunk=2), SelfModConfig(chunk=1), 0.3).double()
    module.reset_gates()
    with torch.no_grad():
        module.gate_bias.copy_(f64([[0.0, -0.5], [1.0, 2.0]]))
    ctx = InnerContext(0.8, TeachConfig(levels={"selfmod": 0.5}), ClipConfig(), None, detach=False)
    scale = 0.8 * 0.5
    x = torch.randn(1, 6, dim, dtype=torch.float64)
    state = module.initial_state()
    p = module.proj.detach().clone()                                     # (H, 2 dh + 2, d)
    dh = dim // heads
    for t in range(6):
        _, state = module(x[:, t:t + 1], state, t, ctx)
        out = p @ x[0, t]                                                # (H, 2 dh + 2)
        k, v = out[:, :dh].reshape(-1), out[:, dh:2 * dh].reshape(-1)
        eta = scale * torch.sigmoid(out[:, 2 * dh] + module.gate_bias[0]).detach()
        a = torch.sigmoid(out[:, 2 * dh + 1] + module.gate_bias[1]).detach() ** scale
        kbar = k / k.norm()
        p = torch.stack([a[h] * p[h] - eta[h] * torch.outer(p[h] @ (kbar - v), kbar) for h in range(heads)])
        torch.testing.assert_close(state.proj.read[0], p, rtol=0, atol=1e-13)

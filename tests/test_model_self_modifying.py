"""HOPE's self-modifying update rule (docs/MODEL_DECISIONS.md), pinned by hand:

    P <- P_0 + a (P - P_0) - eta (P kbar - v_hat) kbar^T,
    v_hat = P v * ||P kbar|| / ||P v||   (matched)   or   P v   (raw)
"""
from __future__ import annotations

import math

import pytest
import torch

from nlrepro.model.config import InContextConfig, MemoryConfig, SelfModConfig
from nlrepro.model.inner import InnerContext
from nlrepro.model.layers import l2_normalize
from nlrepro.model.self_modifying import SelfModifyingMemory, delta_rule_write


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_one_token_update_equals_a_hand_computation():
    p = [[0.5, -1.0], [2.0, 0.25]]                  # one head, 2 outputs, d = 2
    p0 = [[0.4, -0.9], [1.5, 0.5]]                  # the slow projection forgetting returns to
    k = [3.0, 4.0]                                 # kbar = (0.6, 0.8)
    v = [1.0, -2.0]
    eta, a = 0.1, 0.9
    kbar = [0.6, 0.8]
    pk = [row[0] * kbar[0] + row[1] * kbar[1] for row in p]        # P kbar = (-0.5, 1.4)
    pv = [row[0] * v[0] + row[1] * v[1] for row in p]              # P v = (2.5, 1.5)
    ratio = math.sqrt(pk[0] ** 2 + pk[1] ** 2) / math.sqrt(pv[0] ** 2 + pv[1] ** 2)
    read = f64([[p]])
    for target, v_hat in (("raw", pv), ("matched", [ratio * x for x in pv])):
        expect = [[p0[i][j] + a * (p[i][j] - p0[i][j]) - eta * (pk[i] - v_hat[i]) * kbar[j] for j in range(2)]
                  for i in range(2)]
        out = delta_rule_write(f64([[p0]]), read, read, l2_normalize(f64([[k]])), f64([[v]]), f64([[[eta]]]),
                               f64([[[math.log(a)]]]), target)
        torch.testing.assert_close(out[0, 0], f64(expect), rtol=0, atol=1e-15)
    # The raw rule in the paper's layout: P (a I - eta kbar kbar^T) + eta (P v) kbar^T (+ (1 - a) P_0).
    pm, kb = f64(p), f64(kbar)
    paper = (pm @ (a * torch.eye(2, dtype=torch.float64) - eta * torch.outer(kb, kb))
             + eta * torch.outer(pm @ f64(v), kb) + (1 - a) * f64(p0))
    out = delta_rule_write(f64([[p0]]), read, read, l2_normalize(f64([[k]])), f64([[v]]), f64([[[eta]]]),
                           f64([[[math.log(a)]]]), "raw")
    torch.testing.assert_close(out[0, 0], paper, rtol=0, atol=1e-15)


def test_two_tokens_in_one_chunk_use_the_chunk_start_projection():
    p = f64([[1.0, 0.5]])
    k1, v1, k2, v2 = f64([1.0, 0.0]), f64([0.5, 0.5]), f64([0.0, 1.0]), f64([-1.0, 2.0])
    (e1, a1), (e2, a2) = (0.2, 0.9), (0.3, 0.8)
    zero = torch.zeros_like(p)
    expect = a1 * a2 * p - a2 * e1 * torch.outer(p @ (k1 - v1), k1) - e2 * torch.outer(p @ (k2 - v2), k2)
    out = delta_rule_write(zero[None, None], p[None, None], p[None, None], torch.stack([k1, k2])[None],
                           torch.stack([v1, v2])[None], f64([[[e1, e2]]]),
                           f64([[[math.log(a1), math.log(a2)]]]).reshape(1, 1, 2), "raw")
    torch.testing.assert_close(out[0, 0], expect, rtol=0, atol=1e-15)


def test_matched_target_never_raises_the_projection_norm_token_by_token():
    """The bound of the module docstring: with eta <= a and the matched target,
    ||P_t||_F <= max(||P_{t-1}||_F, ||P_0||_F) for any keys, values and rates."""
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(1, 1, 5, 7, dtype=torch.float64, generator=g)
    p = p0.clone()
    for _ in range(500):
        kbar = l2_normalize(torch.randn(1, 1, 7, dtype=torch.float64, generator=g))
        v = 10 * torch.randn(1, 1, 7, dtype=torch.float64, generator=g)
        a = torch.rand(1, 1, 1, dtype=torch.float64, generator=g) * 0.5 + 0.5
        eta = a * torch.rand(1, 1, 1, dtype=torch.float64, generator=g)
        new = delta_rule_write(p0, p, p, kbar, v, eta, a.log(), "matched")
        assert new.norm() <= max(p.norm(), p0.norm()) + 1e-12
        p = new
    raw = p0.clone()
    for _ in range(60):                     # the raw target grows without bound on the same stream
        kbar = l2_normalize(torch.randn(1, 1, 7, dtype=torch.float64, generator=g))
        v = 10 * torch.randn(1, 1, 7, dtype=torch.float64, generator=g)
        raw = delta_rule_write(p0, raw, raw, kbar, v, f64([[[0.5]]]), f64([[[0.0]]]), "raw")
    assert raw.norm() > 1e3 * p0.norm()


@pytest.mark.parametrize("rule", ["bounded", "plain"])
def test_module_projections_follow_the_rule_token_by_token(rule):
    """With selfmod.chunk = 1 the module's fused projections equal the rule applied per
    token to its own k_t, v_t, eta_t, a_t, scaled by teach_scale * teach.levels.selfmod."""
    torch.manual_seed(0)
    dim, heads = 8, 2
    module = SelfModifyingMemory(dim, heads, MemoryConfig(chunk=2), SelfModConfig(chunk=1, rule=rule), 0.3).double()
    module.reset_gates()
    with torch.no_grad():
        module.gate_bias.copy_(f64([[0.0, -0.5], [1.0, 2.0]]))
    ctx = InnerContext(0.8, InContextConfig(levels={"selfmod": 0.5}), detach=False)
    scale = 0.8 * 0.5
    x = torch.randn(1, 6, dim, dtype=torch.float64)
    state = module.initial_state()
    p0 = module.proj.detach().clone()                                    # (H, 2 dh + 2, d)
    p = p0.clone()
    dh = dim // heads
    for t in range(6):
        _, state = module(x[:, t:t + 1], state, t, ctx)
        out = p @ x[0, t]                                                # (H, 2 dh + 2)
        k, v = out[:, :dh].reshape(-1), out[:, dh:2 * dh].reshape(-1)
        eta = scale * torch.sigmoid(out[:, 2 * dh] + module.gate_bias[0]).detach()   # chunk 1: / 1
        a = torch.sigmoid(out[:, 2 * dh + 1] + module.gate_bias[1]).detach() ** scale
        kbar = k / k.norm()
        rows = []
        for h in range(heads):
            pk, pv = p[h] @ kbar, p[h] @ v
            v_hat = pv * (pk.norm() / pv.norm()) if rule == "bounded" else pv
            anchor = p0[h] if rule == "bounded" else torch.zeros_like(p0[h])
            rows.append(anchor + a[h] * (p[h] - anchor) - eta[h] * torch.outer(pk - v_hat, kbar))
        p = torch.stack(rows)
        torch.testing.assert_close(state.proj.read[0], p, rtol=0, atol=1e-13)

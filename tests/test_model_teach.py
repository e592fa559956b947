"""The teach signal: the per-token gradient of the token's own loss at the top of the stream."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nlrepro.model.config import CMSConfig, CMSLevel, InContextConfig, MemoryConfig, ModelConfig, SelfModConfig
from nlrepro.model.lm import build_model
from nlrepro.model.layers import RMSNorm
from nlrepro.model.teach import teach_signal, teach_update_signal


def test_teach_signal_equals_autograd_of_each_tokens_loss_wrt_the_pre_norm_stream():
    torch.manual_seed(0)
    batch, length, dim, vocab = 3, 5, 8, 11
    norm = RMSNorm(dim, 1e-6).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    embedding = torch.randn(vocab, dim, dtype=torch.float64)
    hidden = (3 * torch.randn(batch, length, dim, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, vocab, (batch, length))
    logits = F.linear(norm(hidden), embedding)
    # Summed, not averaged: each token's own loss, independent of batch and length.
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    (expected,) = torch.autograd.grad(loss, hidden)
    delta = teach_signal(hidden.detach(), targets, norm.weight.detach(), embedding, norm.eps)
    torch.testing.assert_close(delta, expected, rtol=0, atol=1e-13)
    assert not delta.requires_grad
    # A token's signal does not depend on the rest of the batch.
    alone = teach_signal(hidden.detach()[:1, 2:3], targets[:1, 2:3], norm.weight.detach(), embedding, norm.eps)
    torch.testing.assert_close(alone, delta[:1, 2:3], rtol=0, atol=1e-15)


def test_teach_clip_bounds_the_scaled_signal_per_token():
    delta = torch.tensor([[[3.0, 4.0], [0.3, 0.4]]], dtype=torch.float64)
    u = teach_update_signal(delta, 0.5, 1.0)
    torch.testing.assert_close(u, torch.tensor([[[0.6, 0.8], [0.15, 0.2]]], dtype=torch.float64))
    torch.testing.assert_close(teach_update_signal(delta, 0.5, None), 0.5 * delta)


def test_the_model_teaches_its_cms_with_each_tokens_next_token_loss():
    """After the first step, the hope model's CMS update equals Eq. 31 with delta taken by
    autograd of the step's per-token losses against the next tokens (the last one being
    the first token of the following step)."""
    cfg = ModelConfig(type="hope", preset=None, d_model=16, n_layers=2, n_heads=2,
                      memory=MemoryConfig(chunk=4), selfmod=SelfModConfig(chunk=4),
                      cms=CMSConfig(levels=(CMSLevel(chunk=4, width=8, lr=0.3), CMSLevel(chunk=None, width=8))))
    torch.manual_seed(0)
    model = build_model(cfg, 32, InContextConfig(teach_clip=0.5)).double()
    x = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(1))
    _, first = model.step(x[:, :4], model.initial_state(), teach_scale=0.7)
    _, second = model.step(x[:, 4:], first, teach_scale=0.7)

    hidden = first.pending.hidden.detach().requires_grad_()
    logits = F.linear(model.final_norm(hidden), model.embed.weight)
    loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:5].flatten(), reduction="sum")
    (delta,) = torch.autograd.grad(loss, hidden)
    u = teach_update_signal(delta, 0.7, 0.5)
    for layer, (block, ls) in enumerate(zip(model.blocks, first.layers)):
        w1, w3, w2 = ls.ffn.weights[0]
        z, a, b = ls.ffn.pending[0]
        h = F.silu(a) * b
        g = u @ w2
        expected = (w1 - 0.3 * (g * b * torch.sigmoid(a) * (1 + a * (1 - torch.sigmoid(a)))).mT @ z,
                    w3 - 0.3 * (g * F.silu(a)).mT @ z,
                    w2 - 0.3 * u.mT @ h)
        for got, want in zip(second.layers[layer].ffn.weights[0], expected):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-13)


def test_the_forwards_own_logits_give_the_same_teach_signal_as_recomputed_ones():
    torch.manual_seed(1)
    batch, length, dim, vocab = 2, 4, 8, 13
    norm = RMSNorm(dim, 1e-6).double()
    embedding = torch.randn(vocab, dim, dtype=torch.float64)
    hidden = 2 * torch.randn(batch, length, dim, dtype=torch.float64)
    targets = torch.randint(0, vocab, (batch, length))
    logits = F.linear(norm(hidden), embedding).requires_grad_()
    reused = teach_signal(hidden, targets, norm.weight.detach(), embedding, norm.eps, logits=logits)
    recomputed = teach_signal(hidden, targets, norm.weight.detach(), embedding, norm.eps)
    torch.testing.assert_close(reused, recomputed, rtol=0, atol=1e-14)
    assert not reused.requires_grad

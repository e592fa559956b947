"""The model as a recurrence over chunks: causality, streaming, batch independence,
teach_scale = 0, outer gradients through the writes, and clipping (float64)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from nlrepro.model.config import CMSConfig, CMSLevel, InContextConfig, MemoryConfig, ModelConfig, SelfModConfig
from nlrepro.model.lm import build_model
from nlrepro.model.combine import MixerState
from nlrepro.model.memory import NeuralMemoryState
from nlrepro.model.self_modifying import SelfModState


VOCAB = 32
VARIANTS = ["transformer", "titan", "hope"]


def tiny_config(variant: str, **overrides) -> ModelConfig:
    fields = dict(
        type=variant, preset=None, d_model=16, n_layers=2, n_heads=2, mlp_width=24, window=6,
        memory=MemoryConfig(chunk=4, depth=2), selfmod=SelfModConfig(chunk=4),
        cms=CMSConfig(levels=(CMSLevel(chunk=4, width=8, lr=0.5), CMSLevel(chunk=8, width=8, lr=0.5),
                              CMSLevel(chunk=None, width=8))),
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def tiny_model(variant: str, seed: int = 0, guards: InContextConfig | None = None, **overrides):
    """A float64 model whose in-context updates are strong enough to see."""
    torch.manual_seed(seed)
    model = build_model(tiny_config(variant, **overrides), VOCAB, guards).double()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "to_gates"):
                module.to_gates.bias.view(3, -1)[0].fill_(0.0)      # theta = 0.5
            if hasattr(module, "gate_bias"):
                module.gate_bias[0].fill_(0.0)                      # eta = 0.5
                module.gate_bias[1].fill_(2.0)                      # retention 0.88
    return model


def tokens(batch: int = 2, length: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


ATTENTION_CASES = [(v, "full") for v in VARIANTS] + [("titan", "swa"), ("hope", "swa"), ("titan", "none"),
                                                     ("hope", "none"), ("transformer", "swa")]


@pytest.mark.parametrize("variant, attention", ATTENTION_CASES)
def test_future_tokens_do_not_change_past_logits(variant, attention):
    model = tiny_model(variant, attention=attention)
    x = tokens(length=20)
    base = model(x, teach_scale=1.0)
    if variant != "transformer":
        assert base.stats, "in-context updates must be on"
    for t in (2, 3, 7, 8, 13):
        changed = x.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 5) % VOCAB
        out = model(changed, teach_scale=1.0).logits
        torch.testing.assert_close(out[:, :t + 1], base.logits[:, :t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(out[:, t + 1:], base.logits[:, t + 1:])


@pytest.mark.parametrize("variant, attention", ATTENTION_CASES)
def test_one_call_equals_streaming_with_carried_state(variant, attention):
    model = tiny_model(variant, attention=attention)
    x = tokens(length=27)
    whole = model(x, teach_scale=1.0)
    state, pieces = None, []
    for start, stop in ((0, 5), (5, 12), (12, 13), (13, 27)):
        out = model(x[:, start:stop], state=state, teach_scale=1.0)
        pieces.append(out.logits)
        state = out.state
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole.logits, rtol=0, atol=1e-12)
    if attention == "swa":
        assert all(ls.mixer.attn.k.shape[2] <= model.cfg.window - 1 for ls in state.layers)


@pytest.mark.parametrize("variant", ["titan", "hope"])
def test_step_by_base_chunk_equals_one_call(variant):
    model = tiny_model(variant)
    x = tokens(length=16)
    state, pieces = model.initial_state(), []
    for start in range(0, 16, 4):
        logits, state = model.step(x[:, start:start + 4], state, teach_scale=0.7)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(x, teach_scale=0.7).logits, rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_equals_its_rows_one_at_a_time(variant):
    model = tiny_model(variant)
    x = tokens(batch=3, length=18)
    batch = model(x, teach_scale=1.0).logits
    for i in range(3):
        row = model(x[i:i + 1], teach_scale=1.0).logits
        torch.testing.assert_close(batch[i:i + 1], row, rtol=0, atol=1e-12)


def _frozen(state, initial):
    """The state with every fast weight put back to its initial value (mechanisms off)."""
    layers = []
    for ls, init in zip(state.layers, initial.layers):
        memory = ls.mixer.memory
        if isinstance(memory, NeuralMemoryState):
            memory = NeuralMemoryState(init.mixer.memory.lmm, memory.conv)
        elif isinstance(memory, SelfModState):
            memory = SelfModState(init.mixer.memory.proj, init.mixer.memory.lmm, memory.conv)
        layers.append(dataclasses.replace(ls, mixer=MixerState(ls.mixer.attn, memory), ffn=init.ffn))
    return dataclasses.replace(state, layers=layers, pending=None)


@pytest.mark.parametrize("variant", ["titan", "hope"])
def test_teach_scale_zero_equals_the_model_with_in_context_mechanisms_off(variant):
    model = tiny_model(variant)
    x = tokens(length=20)
    off_state, off = model.initial_state(), []
    for start in range(0, 20, 4):
        logits, off_state = model.step(x[:, start:start + 4], off_state, teach_scale=1.0)
        off.append(logits)
        off_state = _frozen(off_state, model.initial_state())
    frozen = model(x, teach_scale=0.0)
    torch.testing.assert_close(frozen.logits, torch.cat(off, dim=1), rtol=0, atol=1e-12)
    assert frozen.stats == {}
    # Parameters that act only through the writes no longer matter ...
    with torch.no_grad():
        for module in model.modules():
            for name in ("to_gates", "to_momentum"):
                if hasattr(module, name):
                    getattr(module, name).bias.add_(1.0)
            if hasattr(module, "gate_bias"):
                module.gate_bias.add_(1.0)
    torch.testing.assert_close(model(x, teach_scale=0.0).logits, frozen.logits, rtol=0, atol=1e-12)
    # ... while with a positive scale the mechanisms change the output.
    assert not torch.allclose(model(x, teach_scale=1.0).logits, frozen.logits)


def _loss(model, x, teach_scale=1.0, skip=8):
    logits = model(x, teach_scale=teach_scale).logits
    return F.cross_entropy(logits[:, skip:-1].flatten(0, 1), x[:, skip + 1:].flatten())


def _write_only_parameters(model) -> dict[str, torch.Tensor]:
    """Parameters that reach the output only through in-context writes."""
    params = {}
    for name, module in model.named_modules():
        if hasattr(module, "to_gates"):                         # NeuralMemory
            params[f"{name}.to_gates.weight"] = module.to_gates.weight
            params[f"{name}.to_gates.bias"] = module.to_gates.bias
        if hasattr(module, "gate_bias"):                        # SelfModifyingMemory
            params[f"{name}.gate_bias"] = module.gate_bias
            params[f"{name}.to_momentum.bias"] = module.to_momentum.bias
            params[f"{name}.proj"] = module.proj
    return params


@pytest.mark.parametrize("variant", ["titan", "hope"])
def test_outer_gradients_reach_initial_weights_projections_and_gates_through_the_writes(variant):
    x = tokens(length=20)
    grads = {}
    for detach in (False, True):
        model = tiny_model(variant, memory=MemoryConfig(chunk=4, depth=2, detach_updates=detach))
        _loss(model, x).backward()
        grads[detach] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        write_only = _write_only_parameters(model)
        assert write_only
        for name, p in write_only.items():
            if detach:
                assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
            else:
                assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
        if variant == "titan":
            kv_rows = model.blocks[0].mixer.memory.to_qkv.weight.grad[16:]
            assert (torch.count_nonzero(kv_rows) == 0) == detach
    initial = [n for n in grads[False] if ".mlp.weights." in n or (variant == "hope" and ".ffn.levels.0." in n)]
    assert len(initial) == model.cfg.n_layers * (model.cfg.memory.depth + 3 * (variant == "hope"))
    for name in initial:
        assert torch.count_nonzero(grads[True][name]) > 0, name                    # the direct path
        assert not torch.allclose(grads[False][name], grads[True][name]), name     # plus the writes


@pytest.mark.parametrize("variant", ["titan", "hope"])
def test_clipping_is_the_same_in_train_and_eval_mode(variant):
    """clip.residual bounds the RMS of the gated memory branch (what W_o reads when there
    is no attention) and of the CMS output; every guard reports how often it bound."""
    guards = InContextConfig(residual_clip=1e-5, inner_clip=0.01, teach_clip=1e-4)
    model = tiny_model(variant, guards=guards, attention="none")
    branch, ffn = [], []
    model.blocks[0].mixer.out.register_forward_pre_hook(lambda m, i: branch.append(i[0].pow(2).mean(-1).sqrt().max()))
    model.blocks[0].ffn.register_forward_hook(lambda m, i, o: ffn.append(o[0].pow(2).mean(-1).sqrt().max()))
    x = tokens(length=20)
    model.train()
    train = model(x, teach_scale=1.0)
    model.eval()
    evaluation = model(x, teach_scale=1.0)
    torch.testing.assert_close(train.logits, evaluation.logits, rtol=0, atol=0)
    assert max(branch) <= 1e-5 + 1e-12
    if variant == "hope":
        assert max(ffn) <= 1e-5 + 1e-12
        assert train.stats["clip_rate/residual_cms"] > 0 and train.stats["clip_rate/teach"] > 0
    assert 0 < train.stats["clip_rate/residual_memory"] <= 1 and 0 < train.stats["clip_rate/inner"] <= 1
    assert max(v for k, v in train.stats.items() if k.startswith("update_norm")) <= 0.01 * 4 + 1e-12
    unclipped = tiny_model(variant, attention="none")
    assert not torch.allclose(unclipped(x, teach_scale=1.0).logits, train.logits)

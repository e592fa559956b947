"""Training: schedules against hand computation, exact kill-and-resume, non-finite guards,
strict checkpoints, and the stage's bad-input errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import smoke_params
from nlrepro.errors import NLReproError
from nlrepro.model.config import InContextConfig
from nlrepro.model.lm import build_model
from nlrepro.model.presets import model_config
from nlrepro.train import checkpoint as ckpt
from nlrepro.train.checkpoint import DataIdentity, RunConfig
from nlrepro.train.config import TeachConfig, TrainConfig
from nlrepro.train.data import TrainBatches
from nlrepro.train.loop import RunSpec, Trainer
from nlrepro.train.schedule import TeachSchedule, lr_at

VOCAB = 64
SMALL = {"preset": "tiny", "d_model": 32, "n_layers": 2, "n_heads": 2, "mlp_width": 64,
         "memory": {"chunk": 8}, "selfmod": {"chunk": 8},
         "cms": {"levels": [{"chunk": 8, "width": 16}, {"chunk": 16, "width": 16}]}}


def test_teach_schedule_warms_up_holds_and_decays_to_the_floor():
    cfg = TeachConfig(warmup_steps=10, decay_start=20, decay_steps=10, floor=0.2)
    s = TeachSchedule(0.5, cfg)
    assert s(0) == pytest.approx(0.05)          # (0 + 1) / 10 * 0.5
    assert s(4) == pytest.approx(0.25)          # 5 / 10 * 0.5
    assert s(9) == pytest.approx(0.5)
    assert s(15) == pytest.approx(0.5)
    assert s(20) == pytest.approx(0.5)
    assert s(25) == pytest.approx(0.5 * (1 - 0.8 * 0.5))   # halfway down to 0.2 * 0.5
    assert s(30) == pytest.approx(0.1) and s(1000) == pytest.approx(0.1)  # floor, not zero
    assert TeachSchedule(0.5, TeachConfig(warmup_steps=0, decay_start=None))(10**6) == 0.5


def test_lr_warmup_then_cosine_to_the_minimum():
    assert lr_at(0, 1.0, 10, 110, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 110, 0.1) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 110, 0.1) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # cos(pi/2) = 0
    assert lr_at(110, 1.0, 10, 110, 0.1) == pytest.approx(0.1)


def test_ranks_read_disjoint_rows_that_cover_the_global_batch():
    rows = np.arange(40 * 5).reshape(40, 5)
    single = TrainBatches(rows, 8, seed=3)
    r0, r1 = TrainBatches(rows, 8, 3, rank=0, world=2), TrainBatches(rows, 8, 3, rank=1, world=2)
    for step in (0, 4, 5, 12):  # 5 steps per epoch: 4 -> 5 crosses an epoch
        assert not set(r0.indices(step)) & set(r1.indices(step))
        assert r0.indices(step) + r1.indices(step) == single.indices(step)
    epoch = [i for s in range(5) for i in single.indices(s)]
    assert sorted(epoch) == list(range(40))


def _trainer(tmp_path, variant="hope", steps=6, ckpt_every=2, max_skips=3, rows=None, **train):
    torch.manual_seed(0)
    cfg = model_config({**SMALL, "type": variant})
    teach = TeachConfig(warmup_steps=2, decay_start=4, decay_steps=2, floor=0.5)
    guards = InContextConfig(residual_clip=4.0, inner_clip=1.0, teach_clip=1.0)
    model = build_model(cfg, VOCAB, guards)
    tcfg = TrainConfig(**{"steps": steps, "batch_size": 4, "lr": 1.0e-2, "warmup_steps": 2,
                          "eval_every": 3, "eval_batches": 1, "log_every": 1,
                          "ckpt_every": ckpt_every, "max_skips": max_skips, **train})
    if rows is None:
        rows = np.random.default_rng(0).integers(0, VOCAB, size=(24, 33)).astype(np.uint16)
    run = RunConfig(variant=variant, seed=0, model=cfg, in_context=guards, teach_scale=0.5,
                    teach=teach, grad_clip=1.0, train=tcfg,
                    data=DataIdentity("0" * 64, VOCAB, rows.shape[1], len(rows)))
    spec = RunSpec(run=run, out_dir=tmp_path / "out", ckpt_path=tmp_path / "last.pt",
                   final_path=tmp_path / "final.pt")
    return Trainer(spec, model, rows, rows[:4])


def _params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("variant", ["hope", "transformer"])
def test_kill_and_resume_ends_with_exactly_the_uninterrupted_parameters(tmp_path, variant):
    full = _trainer(tmp_path / "a", variant)
    full.run()
    # Interrupted: killed at step 5, after the checkpoint of step 4 (steps 4-5 are lost).
    killed = _trainer(tmp_path / "b", variant)
    killed.run(until=5)
    resumed = _trainer(tmp_path / "b", variant)
    torch.manual_seed(1234)  # a fresh process has other RNG state: the checkpoint restores it
    assert resumed.resume(tmp_path / "b" / "last.pt") and resumed.step == 4
    resumed.run()
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.progress == full.progress


def test_checkpoint_of_another_config_is_refused(tmp_path):
    t = _trainer(tmp_path)
    t.run(until=2)
    other = _trainer(tmp_path, steps=7)
    with pytest.raises(NLReproError, match=r"trained with another config \(first difference at train.steps\)"):
        other.resume(tmp_path / "last.pt")
    assert ckpt.load(tmp_path / "last.pt", t.spec.run)["progress"]["step"] == 2
    # Knobs that never change the weights (logging, validation, checkpoint cadence) are
    # not part of the run's identity: changing them resumes the same run.
    chatty = _trainer(tmp_path, ckpt_every=1, log_every=2)
    assert chatty.spec.run.hash() == t.spec.run.hash() and chatty.resume(tmp_path / "last.pt")


def test_final_weights_load_strictly(tmp_path):
    t = _trainer(tmp_path)
    t.save(tmp_path / "final.pt", with_optimizer=False)
    payload = ckpt.load(tmp_path / "final.pt")
    bigger = build_model(model_config({**SMALL, "type": "hope", "d_model": 64}), VOCAB)
    with pytest.raises(NLReproError, match="weights do not match the model"):
        ckpt.load_model_state(bigger, payload["model"], tmp_path / "final.pt")
    with pytest.raises(NLReproError, match="holds final weights only"):
        _trainer(tmp_path).resume(tmp_path / "final.pt")


def _poison(module, when):
    """Make ``module``'s output infinite in training forwards where ``when()`` holds."""
    def hook(_m, _i, out):
        if not (when() and torch.is_grad_enabled()):
            return out
        if isinstance(out, tuple):  # (output, new state)
            return (out[0] + float("inf"),) + tuple(out[1:])
        return out + float("inf")

    return module.register_forward_hook(hook)


def test_a_non_finite_step_is_skipped_and_counted(tmp_path):
    t = _trainer(tmp_path, steps=4)
    before = _params(t)
    handle = _poison(t.model.blocks[1].ffn, lambda: t.step == 0)
    metrics = t.train_step()
    assert metrics["skipped"] and not math.isfinite(metrics["loss"])
    assert t.progress.skipped_steps == 1 and t.progress.nonfinite_seen
    after = _params(t)
    assert all(torch.equal(before[k], after[k]) for k in before)  # no optimiser step
    t.run()
    handle.remove()
    assert t.progress.skipped_steps == 1 and t.step == 4
    assert all(torch.isfinite(v).all() for v in _params(t).values())


def test_max_skips_stops_naming_the_first_non_finite_module(tmp_path):
    t = _trainer(tmp_path, steps=10, max_skips=3)
    _poison(t.model.blocks[1].ffn, lambda: True)
    with pytest.raises(NLReproError) as err:
        t.run()
    msg = str(err.value)
    assert "3 consecutive non-finite steps (from step 0)" in msg
    assert "first non-finite output in module 'blocks.1.ffn'" in msg
    assert (tmp_path / "out" / "debug" / "nonfinite-step2.pt").exists()
    assert "\n" not in msg


def test_params_reject_a_negative_teach_scale_and_a_model_type_key():
    from nlrepro.config import Params
    from nlrepro.configlib import ConfigError, parse
    with pytest.raises(ConfigError, match=r"^teach_scale: must be in \[0.0, inf\], got -1"):
        parse(Params, smoke_params(teach_scale=-1))
    with pytest.raises(ConfigError, match="^model.type: set by train.variants"):
        parse(Params, smoke_params(model={"preset": "tiny", "type": "hope"}))
    with pytest.raises(ConfigError, match=r"^train.variants\[0\]: must be one of"):
        parse(Params, smoke_params(train={"variants": ["mamba"]}))


def test_stage_rejects_an_unknown_variant_and_too_many_processes(project):
    project.write_params(smoke_params())
    result = project.run("stages.train", "mamba")
    assert result.returncode == 2
    assert "error: train: unknown variant 'mamba' (expected one of transformer, titan, hope)" in result.stderr
    project.write_params(smoke_params(train={"nproc": 64, "batch_size": 64}))
    result = project.run("stages.train", "hope")
    assert result.returncode == 2
    assert "error: train.nproc: 64 processes requested but this machine allows at most" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_that_cannot_fit_fails_before_allocating(project):
    """The 1.3b preset needs at least ~27 GiB to train (20.7 GiB of parameter state alone):
    one line with the estimate and what is available, within seconds, before any data is
    read (the project has none) or any weight allocated."""
    from nlrepro.train import resources as R
    params = smoke_params(train={"batch_size": 8}, data={"tokenize": {"row_len": 257}})
    params["model"] = {"preset": "1.3b"}
    project.write_params(params)
    available = R.available_bytes(torch.device("cpu"))
    needed = R.estimate_bytes(1_231_000_000, 8, 256, 2048, 24)   # vocabulary 4,096
    if available is None or available >= needed:
        pytest.skip("this machine has the memory for the 1.3b preset")
    result = project.run("stages.train", "hope")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: train hope-s0: needs at least "), lines
    assert "M parameters x 16 bytes" in lines[0] and "GiB are available" in lines[0]


def test_memory_estimate_by_hand():
    from nlrepro.train.resources import estimate_bytes
    # 1M parameters x 16 bytes + 2 sequences x 10 tokens x 16 floats x 4 bytes x d 8 x 3 layers
    assert estimate_bytes(1_000_000, 2, 10, 8, 3) == 16_000_000 + 2 * 10 * 16 * 4 * 8 * 3
    assert estimate_bytes(1_000_000, 2, 10, 8, 3, world=4, fsdp=True) == 4_000_000 + 30_720
    assert estimate_bytes(1_000_000, 2, 10, 8, 3, checkpointing=True) == 16_000_000 + 3_840


def test_train_compile_traces_the_training_forward_and_changes_no_loss(tmp_path, monkeypatch):
    """``train.compile`` wraps the training forward in torch.compile (static shapes); with
    Dynamo's eager backend (tracing without code generation, seconds instead of minutes)
    every loss equals the uncompiled run's, and checkpoints still hold the bare model."""
    from nlrepro.train import distributed as D

    calls = []
    real = torch.compile

    def traced(net, **kw):
        calls.append(kw)
        return real(net, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", traced)
    eager = _trainer(tmp_path / "a", "transformer", steps=2, compile=True)
    losses = [eager.train_step()["loss"] for _ in range(2)]
    compiled = _trainer(tmp_path / "b", "transformer", steps=2, compile=True)
    compiled.net = D.compile_model(compiled.model)
    assert calls == [{"dynamic": False}] and compiled.net is not compiled.model
    assert [compiled.train_step()["loss"] for _ in range(2)] == losses
    compiled.save(tmp_path / "b" / "last.pt")
    assert not any(k.startswith("_orig_mod") for k in ckpt.load(tmp_path / "b" / "last.pt")["model"])

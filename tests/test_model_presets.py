"""Presets: named by their real parameter counts, variants balanced, params resolved."""
from __future__ import annotations

import pytest
import torch

from nlrepro.configlib import ConfigError
from nlrepro.model.lm import build_model
from nlrepro.model.presets import PRESETS, model_config, preset_config
from nlrepro.model.config import base_chunk

VARIANTS = ("transformer", "titan", "hope")
SIZES = {"340m": 340e6, "760m": 760e6, "1.3b": 1.3e9}


def parameter_count(name: str, variant: str, vocab: int = 32000) -> int:
    with torch.device("meta"):
        model = build_model(preset_config(name, variant), vocab)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SIZES))
def test_paper_presets_are_within_ten_percent_of_their_name_at_a_32k_vocabulary(name):
    for variant in VARIANTS:
        count = parameter_count(name, variant)
        assert abs(count - SIZES[name]) <= 0.1 * SIZES[name], (variant, count)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_variants_of_a_preset_have_parameter_counts_within_ten_percent(name):
    counts = [parameter_count(name, variant) for variant in VARIANTS]
    assert max(counts) <= 1.1 * min(counts), counts
    shapes = {(c.d_model, c.n_layers, c.n_heads) for c in (preset_config(name, v) for v in VARIANTS)}
    assert len(shapes) == 1                          # balanced without touching the model width


def test_tiny_is_a_small_cpu_model_and_no_default_step_is_a_single_token():
    assert parameter_count("tiny", "transformer", vocab=4096) < 3e6
    for name in PRESETS:
        for variant in ("titan", "hope"):
            assert base_chunk(preset_config(name, variant)) >= 8


def test_explicit_params_override_the_preset():
    cfg = model_config({"preset": "340m", "type": "hope", "n_layers": 2, "memory": {"chunk": 64}})
    assert (cfg.d_model, cfg.n_layers, cfg.memory.chunk) == (1024, 2, 64)
    assert cfg.cms.levels[0].width == PRESETS["340m"]["hope"]["cms"]["levels"][0]["width"]
    with pytest.raises(ConfigError, match="model.preset"):
        model_config({"preset": "7b"})
    with pytest.raises(ConfigError, match="model.memory.chunk"):
        model_config({"type": "titan", "chunk": 16, "memory": {"chunk": 24}})

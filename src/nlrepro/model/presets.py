"""Model presets: field overrides of ModelConfig per size, then per variant.

Sizes are named by their parameter count at a 32K vocabulary (``test_model_presets``
checks each within 10%); ``tiny`` is the CPU default. The three variants of a size share
d_model, n_layers and n_heads and are balanced to within 10% of each other through the
feed-forward widths (sliding-window attention has no parameters of its own): the SwiGLU width for ``titan`` (its memory branch costs about
4 d^2 per layer more than attention alone) and the CMS level widths for ``hope``. The
memory variants pair with sliding-window attention, Transformer++ keeps full attention
(the papers' pairing); ``model.attention`` / ``model.window`` override both.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from nlrepro.configlib import ConfigError, parse
from nlrepro.model.config import ModelConfig


def _cms(width: int, chunks: tuple[int, ...] = (16, 64, 256), lr: float = 0.01,
         retention: float = 0.8) -> dict:
    """Three CMS levels of equal width, updated every ``chunks`` tokens (highest first)
    with step ``lr``, each forgetting back toward its slow weights by ``retention`` per
    update (0.8 was the best of 0.6 / 0.8 / 0.9 / 1.0 at ``tiny``: docs/STABILITY.md)."""
    return {"cms": {"levels": [{"chunk": c, "width": width, "lr": lr, "retention": retention}
                               for c in chunks]}}


def _swa(window: int) -> dict:
    """Sliding-window attention, as Titans MAG pairs it with the memory: with full
    attention over the training context every token already sees what the memory holds.
    The window sits below the training context so the memory has distance to carry."""
    return {"attention": "swa", "window": window}


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # CPU minutes on 2 cores.
    # Chunks twice the library defaults: on 2 CPU cores the per-step overhead of small
    # chunks dominates (hope ~1.7x faster), and every CMS level still updates inside a
    # 256-token training row.
    "tiny": {
        "common": {"d_model": 128, "n_layers": 4, "n_heads": 4, "mlp_width": 352,
                   "memory": {"chunk": 64}, "selfmod": {"chunk": 32}},
        "titan": {"mlp_width": 128, **_swa(64)},
        "hope": {**_cms(44, chunks=(32, 64, 128), lr=0.02), **_swa(64)},
    },
    "340m": {
        "common": {"d_model": 1024, "n_layers": 24, "n_heads": 16, "mlp_width": 2816},
        "titan": {"mlp_width": 1344, **_swa(512)},
        "hope": {**_cms(448), **_swa(512)},
    },
    "760m": {
        "common": {"d_model": 1536, "n_layers": 24, "n_heads": 16, "mlp_width": 4352},
        "titan": {"mlp_width": 2176, **_swa(512)},
        "hope": {**_cms(720), **_swa(512)},
    },
    "1.3b": {
        "common": {"d_model": 2048, "n_layers": 24, "n_heads": 16, "mlp_width": 5632},
        "titan": {"mlp_width": 2688, **_swa(512)},
        "hope": {**_cms(896), **_swa(512)},
    },
}


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``: mappings merge key by key, anything else (lists
    included) is replaced whole."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def expand_preset(raw: Optional[dict]) -> dict:
    """The params.yaml ``model`` mapping with its preset's fields underneath (explicit
    keys win; lists such as ``cms.levels`` are replaced whole)."""
    raw = dict(raw or {})
    name = raw.get("preset", ModelConfig.preset)
    if name is None:
        return raw
    if name not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    preset = PRESETS[name]
    variant = raw.get("type", ModelConfig.type)
    return deep_merge(deep_merge(preset["common"], preset.get(variant, {})), raw)


def model_config(raw: Optional[dict] = None, path: str = "model") -> ModelConfig:
    """Validated ModelConfig from a params.yaml ``model`` mapping, preset applied."""
    return parse(ModelConfig, expand_preset(raw), path)


def preset_config(name: str, variant: str, **overrides: Any) -> ModelConfig:
    """ModelConfig of preset ``name`` for ``variant`` with field ``overrides``."""
    return model_config({"preset": name, "type": variant, **overrides})

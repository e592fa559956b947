"""params.yaml as one typed object: the packages' own sections, assembled and checked
against each other.

Each package owns its section's dataclasses (``data.config``, ``model.config``,
``train.config``, ``eval.config``, ``report.config``); this module only puts them together
and adds the constraints that span sections. Nothing in the library imports it: stages
call ``load_params()`` and pass each library function its own section. Importing it does
not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from nlrepro.configlib import ConfigError, digest, parse, read_yaml, rng
from nlrepro.data.config import DataConfig
from nlrepro.eval.config import MIN_WINDOW, EvalConfig
from nlrepro.model.config import VARIANTS, InContextConfig, ModelConfig, check_levels
from nlrepro.model.presets import deep_merge, model_config
from nlrepro.report.config import GateConfig, ReportConfig
from nlrepro.train.config import ClipConfig, TeachConfig, TrainConfig, in_context


@dataclass(frozen=True)
class Params:
    seed: int = field(default=0, metadata=rng(0, 2**31 - 1))
    teach_scale: float = field(default=0.05, metadata=rng(0.0, None))
    teach_clip: Optional[float] = field(default=None, metadata=rng(0.0, None))
    teach: TeachConfig = TeachConfig()
    clip: ClipConfig = ClipConfig()
    # The model mapping as written (preset + overrides); resolved per variant by
    # ``model_for`` because the preset depends on the variant.
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    report: ReportConfig = ReportConfig()
    gate: GateConfig = GateConfig()

    def validate(self, path: str) -> None:
        """Cross-section constraints, checked before any stage does work."""
        if "type" in self.model:
            raise ConfigError("model.type: set by train.variants (one stage per variant); "
                              "remove it from params.yaml")
        window = self.eval.max_len or self.data.tokenize.row_len - 1
        if window < MIN_WINDOW:
            key = "eval.max_len" if self.eval.max_len else "data.tokenize.row_len"
            raise ConfigError(f"{key}: the evaluation window (eval.max_len, or row_len - 1) is "
                              f"{window} tokens; it must be at least {MIN_WINDOW} to hold the "
                              f"longest continuation scored")
        for variant in self.train.variants:
            self.model_for(variant)

    def model_for(self, variant: str) -> ModelConfig:
        """The resolved, validated ModelConfig of one variant: the preset, then the shared
        ``model`` keys, then ``model.variants.<variant>``."""
        raw = dict(self.model)
        per_variant = raw.pop("variants", None) or {}
        if not isinstance(per_variant, dict):
            raise ConfigError("model.variants: expected a mapping variant -> model keys")
        for name, keys in per_variant.items():
            if name not in VARIANTS:
                raise ConfigError(f"model.variants.{name}: unknown variant (known: {', '.join(VARIANTS)})")
            if not isinstance(keys, dict) or "type" in keys:
                raise ConfigError(f"model.variants.{name}: expected a mapping of model keys other than type")
        cfg = model_config(deep_merge({**raw, "type": variant}, per_variant.get(variant) or {}))
        check_levels(self.teach.levels, "teach", cfg)
        return cfg

    def in_context(self) -> InContextConfig:
        """What the model reads of ``teach``, ``clip`` and ``teach_clip``."""
        return in_context(self.teach, self.clip, self.teach_clip)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; any problem is one ``ConfigError`` line."""
    return parse(Params, read_yaml(path))


def params_hash(params: Params) -> str:
    """Lineage hash of the whole params file (``configlib.digest``)."""
    return digest(params)

"""The one typed config of nlrepro, read from params.yaml and validated once at start.

Sections mirror params.yaml; every field's comment there says what it does. Stages call
``load_params()`` and read only their own section (dvc.yaml lists the keys per stage).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from nlrepro.configlib import ConfigError, parse, rng, to_dict
from nlrepro.errors import NLReproError
from nlrepro.eval.config import MIN_WINDOW, EvalConfig
from nlrepro.model.config import ClipConfig, ModelConfig, TeachConfig
from nlrepro.model.presets import deep_merge, model_config
from nlrepro.report.config import GateConfig, ReportConfig
from nlrepro.train.config import VARIANTS, TrainConfig


# --- data sources (tagged by `type`) -------------------------------------------------

@dataclass(frozen=True)
class ShakespeareSource:
    type: Literal["shakespeare"]
    weight: float = field(default=1.0, metadata=rng(0.0, 100.0))
    limit: Optional[int] = field(default=None, metadata=rng(1, None))
    unit: Literal["scene", "play"] = "scene"


@dataclass(frozen=True)
class SyntheticSource:
    type: Literal["synthetic"]
    weight: float = field(default=1.0, metadata=rng(0.0, 100.0))
    num_docs: int = field(default=400, metadata=rng(1, 10_000_000))
    kinds: tuple[Literal["passkey", "kv_recall"], ...] = ("passkey", "kv_recall")
    distances: tuple[int, ...] = field(default=(32, 128, 512), metadata=rng(0, 1_000_000))
    num_pairs: int = field(default=8, metadata=rng(1, 256))

    def validate(self, path: str) -> None:
        if not self.kinds:
            raise ConfigError(f"{path}.kinds: at least one kind is required")
        if not self.distances:
            raise ConfigError(f"{path}.distances: at least one distance is required")


@dataclass(frozen=True)
class HFSource:
    type: Literal["hf"]
    path: str = ""
    name: Optional[str] = None
    split: str = "train"
    text_field: str = "text"
    limit: int = field(default=10_000, metadata=rng(1, None))
    revision: Optional[str] = None
    weight: float = field(default=1.0, metadata=rng(0.0, 100.0))

    def validate(self, path: str) -> None:
        if not self.path:
            raise ConfigError(f"{path}.path: a dataset id or local directory is required")


@dataclass(frozen=True)
class LocalSource:
    type: Literal["local"]
    paths: tuple[str, ...] = ()
    format: Literal["txt", "jsonl", "parquet"] = "jsonl"
    text_field: str = "text"
    limit: Optional[int] = field(default=None, metadata=rng(1, None))
    weight: float = field(default=1.0, metadata=rng(0.0, 100.0))

    def validate(self, path: str) -> None:
        if not self.paths:
            raise ConfigError(f"{path}.paths: at least one file or glob is required")


Source = Union[ShakespeareSource, SyntheticSource, HFSource, LocalSource]


# --- data stages -----------------------------------------------------------------------

@dataclass(frozen=True)
class FilterConfig:
    min_chars: int = field(default=200, metadata=rng(0, None))
    max_chars: int = field(default=1_000_000, metadata=rng(1, None))
    min_alpha_frac: float = field(default=0.6, metadata=rng(0.0, 1.0))
    min_stopword_frac: float = field(default=0.05, metadata=rng(0.0, 1.0))
    near_dup_threshold: Optional[float] = field(default=0.8, metadata=rng(0.0, 1.0))
    shingle_words: int = field(default=5, metadata=rng(1, 64))
    num_perm: int = field(default=128, metadata=rng(8, 4096))

    def validate(self, path: str) -> None:
        if self.max_chars < self.min_chars:
            raise ConfigError(f"{path}.max_chars: must be >= min_chars ({self.min_chars})")


@dataclass(frozen=True)
class SplitConfig:
    val_frac: float = field(default=0.05, metadata=rng(0.0, 0.5))
    test_frac: float = field(default=0.05, metadata=rng(0.0, 0.5))


@dataclass(frozen=True)
class ShardConfig:
    docs_per_shard: int = field(default=256, metadata=rng(1, None))


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = field(default=4096, metadata=rng(264, 65536))
    min_frequency: int = field(default=2, metadata=rng(1, None))
    sample_chars: int = field(default=50_000_000, metadata=rng(1000, None))


@dataclass(frozen=True)
class TokenizeConfig:
    row_len: int = field(default=257, metadata=rng(2, 1_048_576))
    batch_docs: int = field(default=256, metadata=rng(1, None))


@dataclass(frozen=True)
class DataConfig:
    sources: dict[str, Source] = field(default_factory=dict)
    filter: FilterConfig = FilterConfig()
    split: SplitConfig = SplitConfig()
    shard: ShardConfig = ShardConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    tokenize: TokenizeConfig = TokenizeConfig()

    def validate(self, path: str) -> None:
        if not self.sources:
            raise ConfigError(f"{path}.sources: at least one source is required")
        if self.split.val_frac + self.split.test_frac >= 1.0:
            raise ConfigError(f"{path}.split: val_frac + test_frac must be < 1")


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
        if variant == "hope":
            n = len(cfg.cms.levels)
            for key in self.teach.levels:
                if key.startswith("cms") and int(key[3:]) >= n:
                    raise ConfigError(f"teach.levels.{key}: the hope model has {n} CMS levels")
        return cfg


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; any problem is one ``ConfigError`` line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NLReproError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise NLReproError(f"{path}: not valid YAML{where}") from None
    return parse(Params, raw)


def section_hash(obj) -> str:
    """Stable short hash of a config section, for lineage records."""
    blob = json.dumps(to_dict(obj), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

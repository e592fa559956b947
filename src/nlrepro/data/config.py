"""Typed configs of the data stages (params.yaml key ``data``): the corpus sources (a
tagged union on ``type``), the filter, the split, the shards, the tokenizer and the
tokenised rows. Ranges are inclusive (``rng``; None = open) and checked by
``nlrepro.configlib.parse``, which also calls each ``validate``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from nlrepro.configlib import ConfigError, rng


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
    """A hub dataset (or a local directory in the hub layout), streamed in order.

    The read stops at ``limit`` documents or once ``max_chars`` characters of text have
    been read, whichever comes first; at least one of the two must be set, since a hub
    dataset can be terabytes. The budget is in characters, not tokens: the tokenizer is
    trained after ingest, so tokens are not known yet (about 4 characters per token for
    English BPE is a rough guide).
    """
    type: Literal["hf"]
    path: str = ""
    name: Optional[str] = None
    split: str = "train"
    text_field: str = "text"
    limit: Optional[int] = field(default=10_000, metadata=rng(1, None))
    max_chars: Optional[int] = field(default=None, metadata=rng(1, None))
    revision: Optional[str] = None
    weight: float = field(default=1.0, metadata=rng(0.0, 100.0))

    def validate(self, path: str) -> None:
        if not self.path:
            raise ConfigError(f"{path}.path: a dataset id or local directory is required")
        if self.limit is None and self.max_chars is None:
            raise ConfigError(f"{path}: set limit or max_chars (or both); an unbounded "
                              f"read of a hub dataset is not allowed")


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
class SlurmConfig:
    """Where the filter engine's tasks run on a Slurm cluster (``executor: slurm``)."""
    partition: Optional[str] = None
    time: str = "04:00:00"
    cpus_per_task: int = field(default=1, metadata=rng(1, 256))
    mem_per_cpu_gb: int = field(default=2, metadata=rng(1, 1024))
    # The cluster nodes' Python environment (a venv directory on the shared filesystem).
    venv: Optional[str] = None


@dataclass(frozen=True)
class FilterConfig:
    min_chars: int = field(default=200, metadata=rng(0, None))
    max_chars: int = field(default=1_000_000, metadata=rng(1, None))
    min_alpha_frac: float = field(default=0.6, metadata=rng(0.0, 1.0))
    min_stopword_frac: float = field(default=0.05, metadata=rng(0.0, 1.0))
    near_dup_threshold: Optional[float] = field(default=0.8, metadata=rng(0.0, 1.0))
    shingle_words: int = field(default=5, metadata=rng(1, 64))
    num_perm: int = field(default=128, metadata=rng(8, 4096))
    # Parallel engine (nlrepro.data.engine, datatrove): same output for any worker count.
    workers: int = field(default=1, metadata=rng(1, 100_000))
    executor: Literal["local", "slurm"] = "local"
    part_docs: int = field(default=10_000, metadata=rng(1, None))
    slurm: SlurmConfig = SlurmConfig()

    def validate(self, path: str) -> None:
        if self.max_chars < self.min_chars:
            raise ConfigError(f"{path}.max_chars: must be >= min_chars ({self.min_chars})")
        if self.executor == "slurm" and not self.slurm.partition:
            raise ConfigError(f"{path}.slurm.partition: required when executor is slurm")

    @property
    def uses_engine(self) -> bool:
        """True when the datatrove engine runs the filter (else the in-process path)."""
        return self.workers > 1 or self.executor == "slurm"


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
    shard_rows: int = field(default=4096, metadata=rng(1, None))


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

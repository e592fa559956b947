"""The study's params file (studies/long_context/params.yaml): the main schema's sections
(``seed``, ``teach_scale``, ``teach_clip``, ``teach``, ``clip``, ``model``, ``train``),
validated by ``nlrepro.config.Params`` exactly as the main pipeline validates its own,
plus a ``study`` section (``StudyConfig``) for the retrieval data, grid and benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nlrepro.config import Params
from nlrepro.configlib import ConfigError, parse, read_yaml, rng

HERE = Path(__file__).resolve().parent
PARAMS = HERE / "params.yaml"
# Inputs from the main pipeline (read only) and the study's outputs, relative to the repo root.
TOKENIZER = Path("data/tokenizer/tokenizer.json")
CORPUS = Path("data/tokens")
OUT = Path("studies/long_context")
TOKENS = OUT / "data/tokens"
MODELS = OUT / "models"
CHECKPOINTS = OUT / "checkpoints"
METRICS = OUT / "metrics"


@dataclass(frozen=True)
class StudyData:
    # Training rows generated (each one row of row_len tokens).
    train_rows: int = field(default=4096, metadata=rng(1, None))
    # Validation rows (same mixture, another seed).
    val_rows: int = field(default=64, metadata=rng(1, None))
    # Tokens per row: the training context plus one target.
    row_len: int = field(default=513, metadata=rng(64, None))
    # Share of rows made of retrieval documents (the rest of each such row, and every
    # other row, is the main pipeline's tokenised corpus).
    retrieval_frac: float = field(default=0.75, metadata=rng(0.0, 1.0))
    # Document kinds drawn uniformly: passkey | kv | repeat (numbers recalled as a copy).
    kinds: tuple[Literal["passkey", "kv", "repeat"], ...] = ("passkey", "kv")
    # Key-value records per kv document.
    num_pairs: int = field(default=4, metadata=rng(1, 64))
    # Distances (fact start to answer, tokens) are log-uniform in [min, max] (capped by the row).
    min_distance: int = field(default=32, metadata=rng(1, None))
    max_distance: int = field(default=480, metadata=rng(1, None))


@dataclass(frozen=True)
class StudyEval:
    # Distances of the grid as multiples of the attention window (W/2 .. 64W).
    distances_w: tuple[float, ...] = field(default=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
                                           metadata=rng(0.0, None))
    # Needle depths: share of the filler before the needle, in [0, 1).
    depths: tuple[float, ...] = field(default=(0.0, 0.25, 0.5), metadata=rng(0.0, 0.99))
    # Probes per (distance, depth) cell.
    samples: int = field(default=32, metadata=rng(1, None))
    # Probes per cell of the ablation with every in-context update off (teach scale 0).
    ablation_samples: int = field(default=8, metadata=rng(0, None))
    # Sequences per forward call, and tokens per streamed piece.
    batch_size: int = field(default=32, metadata=rng(1, None))
    stream_chunk: int = field(default=512, metadata=rng(1, None))
    # Haystack distance (in W) of the update-norm / gate trace.
    trace_distance_w: float = field(default=16.0, metadata=rng(0.0, None))
    # torch threads (CPU).
    threads: int = field(default=2, metadata=rng(1, 1024))


@dataclass(frozen=True)
class StudyBench:
    # Passkey prompt lengths (tokens) of the bounded-memory benchmark.
    lengths: tuple[int, ...] = field(default=(1024, 4096, 16384), metadata=rng(64, None))


@dataclass(frozen=True)
class StudyConfig:
    data: StudyData = StudyData()
    eval: StudyEval = StudyEval()
    bench: StudyBench = StudyBench()

    def validate(self, path: str) -> None:
        if self.data.min_distance > self.data.max_distance:
            raise ConfigError(f"{path}.data.min_distance: above max_distance")


def load(path: Path | str = PARAMS) -> tuple[Params, StudyConfig]:
    raw = read_yaml(path)
    if not isinstance(raw, dict) or "study" not in raw:
        raise ConfigError(f"{path}: expected a mapping with a 'study' section")
    study = parse(StudyConfig, raw.pop("study"), "study")
    params = parse(Params, raw)
    for v in params.train.variants:
        m = params.model_for(v)
        if m.attention != "swa":
            raise ConfigError(f"model.variants.{v}.attention: the study needs swa for every variant")
    windows = {params.model_for(v).window for v in params.train.variants}
    if len(windows) != 1:
        raise ConfigError(f"model.window: every variant needs the same window, got {sorted(windows)}")
    return params, study


def window(params: Params) -> int:
    return params.model_for(params.train.variants[0]).window


def distances(params: Params, study: StudyConfig) -> list[int]:
    w = window(params)
    return [max(1, int(round(f * w))) for f in study.eval.distances_w]

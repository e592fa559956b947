"""Typed config of the evaluate stage (params.yaml key ``eval``).

The offline suite's sizes are chosen so the whole suite runs in about a minute per variant
of the tiny preset on 2 CPU cores (``benchmarks/bench_eval.py``); ``docs/EVAL_STAGE.md``
says what each task measures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from nlrepro.configlib import ConfigError, rng
from nlrepro.eval.tasks import TASKS

# Smallest log-likelihood window (eval.max_len, or the training context row_len - 1): the
# longest continuation scored (8 words of the real-vs-distractor task, about 50 tokens of
# a byte-level vocabulary) must fit in one window.
MIN_WINDOW = 64
# Longest passkey prompt and stability stream, in tokens: both are scored by one forward
# pass in stream_chunk pieces, about a minute per 16K tokens of the tiny preset on 2 CPU
# cores; beyond this a typo (an extra zero) would run for hours.
MAX_STREAM_TOKENS = 131_072


@dataclass(frozen=True)
class PerplexityConfig:
    """Held-out perplexity per token and per byte over test-split documents."""

    # Test documents scored, taken round-robin over sources in a seeded order (null = all).
    docs: Optional[int] = field(default=16, metadata=rng(1, None))
    # Each document is cut to its first this many characters, at a whitespace.
    max_chars: int = field(default=1500, metadata=rng(1, None))


@dataclass(frozen=True)
class LastWordConfig:
    """LAMBADA-style: predict the last word of a held-out passage from the text before it."""

    # Passages (one request each).
    samples: int = field(default=96, metadata=rng(1, None))
    # Characters of context before the last word (cut at a whitespace).
    context_chars: int = field(default=300, metadata=rng(1, None))
    # Shortest target word in letters (skips "a", "I", "of" ...).
    min_word_chars: int = field(default=3, metadata=rng(1, None))


@dataclass(frozen=True)
class ChoiceConfig:
    """HellaSwag-style: which continuation of a held-out passage is the real one."""

    # Passages (num_choices requests each).
    samples: int = field(default=48, metadata=rng(1, None))
    # Choices per passage: the real continuation plus distractors from other documents.
    num_choices: int = field(default=4, metadata=rng(2, 16))
    # Characters of context before the continuation (cut at a whitespace).
    context_chars: int = field(default=300, metadata=rng(1, None))
    # Words in every choice.
    continuation_words: int = field(default=8, metadata=rng(1, None))


@dataclass(frozen=True)
class PasskeyConfig:
    """Needle in a haystack: greedy retrieval of a 5-digit passkey."""

    # Whole prompt lengths in tokens of our tokenizer (exact), below and beyond training.
    lengths: tuple[int, ...] = field(default=(256, 512, 1024, 2048),
                                     metadata=rng(16, MAX_STREAM_TOKENS))
    # Needle positions as a fraction of the filler (0 = first, 1 = just before the question).
    depths: tuple[float, ...] = field(default=(0.0, 0.25, 0.5, 0.75, 1.0), metadata=rng(0.0, 1.0))
    # Haystacks per (length, depth), each with its own key and filler.
    samples: int = field(default=2, metadata=rng(1, None))

    def validate(self, path: str) -> None:
        if not self.lengths:
            raise ConfigError(f"{path}.lengths: at least one length is required")
        if not self.depths:
            raise ConfigError(f"{path}.depths: at least one depth is required")


@dataclass(frozen=True)
class ICLConfig:
    """What the in-context updates are worth (loss on vs off, per mechanism, by position)
    and whether the fast weights stay bounded over a long stream (``eval/icl.py``)."""

    # Validation sequences scored with the updates on, off and per mechanism frozen.
    sequences: int = field(default=16, metadata=rng(1, None))
    # Tokens per sequence (longer than the training context on purpose).
    length: int = field(default=1024, metadata=rng(2, MAX_STREAM_TOKENS))
    # Positions per bucket of the loss-by-position curve.
    bucket: int = field(default=64, metadata=rng(1, None))
    # Tokens of the stability stream (0 = skip it).
    stream_tokens: int = field(default=16384, metadata=rng(0, MAX_STREAM_TOKENS))
    # Teach scale of the stability stream (its inner and residual clips are off).
    stream_teach_scale: float = field(default=1.0, metadata=rng(0.0, None))

    def validate(self, path: str) -> None:
        if self.bucket > self.length:
            raise ConfigError(f"{path}.bucket: {self.bucket} is longer than the sequence "
                              f"({path}.length = {self.length})")


@dataclass(frozen=True)
class EvalConfig:
    """The evaluate stage: scorer settings, the offline suite and the zero-shot tasks."""

    # Teach scale of the in-context updates at evaluation; null = the one stored in the
    # checkpoint (the scale in force at the last training step).
    teach_scale: Optional[float] = field(default=None, metadata=rng(0.0, None))
    # Window of a log-likelihood request in tokens (lm-eval's max_length; longer requests
    # lose their left end); null = the training context of the checkpoint.
    max_len: Optional[int] = field(default=None, metadata=rng(1, None))
    # Tokens per forward call when a sequence is longer (state carried: bounded memory).
    stream_chunk: int = field(default=256, metadata=rng(1, None))
    # Sequences per forward call.
    batch_size: int = field(default=16, metadata=rng(1, None))
    # torch threads on CPU (null = torch's default); one is fastest for the tiny preset,
    # and by far when other jobs share the cores.
    threads: Optional[int] = field(default=1, metadata=rng(1, None))
    # Test-split sources the passage tasks draw from (null = every source in the split).
    sources: Optional[tuple[str, ...]] = None
    perplexity: PerplexityConfig = PerplexityConfig()
    last_word: LastWordConfig = LastWordConfig()
    choice: ChoiceConfig = ChoiceConfig()
    passkey: PasskeyConfig = PasskeyConfig()
    # In-context learning: loss with updates on vs off, per mechanism, by position, and
    # a long stream's fast-weight norms (docs/EVAL_STAGE.md).
    icl: ICLConfig = ICLConfig()
    # The paper's zero-shot tasks: name -> local JSONL/parquet file in the HF schema, or
    # null for the HF hub (docs/EVAL_TASKS.md).
    tasks: dict[str, Optional[str]] = field(default_factory=dict)
    # First rows of each zero-shot task (lm-eval's --limit); null = all.
    task_limit: Optional[int] = field(default=None, metadata=rng(1, None))

    def validate(self, path: str) -> None:
        for name in self.tasks:
            if name not in TASKS:
                raise ConfigError(f"{path}.tasks.{name}: unknown task (known: {', '.join(TASKS)})")
        if self.sources is not None and not self.sources:
            raise ConfigError(f"{path}.sources: list at least one source, or null for all")

"""Tokenizer: a byte-level BPE (Hugging Face ``tokenizers``) trained on the train split.

Byte-level means every string encodes and decodes back exactly, with no unknown token;
``<|endoftext|>`` (id 0) separates documents in packed rows.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from nlrepro.errors import NLReproError
from nlrepro.io import sha256_file

EOS = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def sample_order(lengths: np.ndarray, budget_chars: int, seed: int) -> np.ndarray:
    """Indices of a seeded random sample of whole documents, in sample order: documents
    in a random permutation are taken while fewer than ``budget_chars`` characters have
    been taken (the last one may cross the budget). Needs only the documents' lengths."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    taken_before = np.cumsum(lengths[order]) - lengths[order]
    return order[:int(np.searchsorted(taken_before, budget_chars, side="left"))]


def sample_texts(texts: list[str], budget_chars: int, seed: int) -> list[str]:
    """``sample_order`` of a list of documents held in memory."""
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    return [texts[i] for i in sample_order(lengths, budget_chars, seed)]


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.exists():
        raise NLReproError(f"{path}: tokenizer not found (run the tokenizer stage first)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:
        raise NLReproError(f"{path}: not a valid tokenizer file ({type(exc).__name__})") from None


def file_hash(path: str | Path) -> str:
    return sha256_file(path)


def coverage_stats(tok: Tokenizer, texts: Iterable[str], batch: int = 32) -> dict:
    """How well the vocabulary fits held-out text: tokens per whitespace word, characters
    and UTF-8 bytes per token, and the share of distinct words that are a single token.
    Streams ``texts`` in batches (an Encoding costs far more than its text); holds the
    distinct words."""
    n_tokens = n_words = n_chars = n_bytes = 0
    distinct: set[str] = set()
    texts = iter(texts)
    while chunk := list(itertools.islice(texts, batch)):
        n_tokens += sum(len(e.ids) for e in tok.encode_batch_fast(chunk))
        for t in chunk:
            words = t.split()
            n_words += len(words)
            distinct.update(words)
            n_chars += len(t)
            n_bytes += len(t.encode())
    if not n_chars and not n_words and not n_tokens and not distinct:
        return {}
    ordered = sorted(distinct)
    single = sum(len(e.ids) == 1
                 for i in range(0, len(ordered), 4096)
                 for e in tok.encode_batch_fast([" " + w for w in ordered[i:i + 4096]]))
    return {
        "tokens_per_word": n_tokens / max(1, n_words),
        "chars_per_token": n_chars / max(1, n_tokens),
        "bytes_per_token": n_bytes / max(1, n_tokens),
        "single_token_word_frac": single / max(1, len(distinct)),
    }

"""Tokenizer: a byte-level BPE (Hugging Face ``tokenizers``) trained on the train split.

Byte-level means every string encodes and decodes back exactly, with no unknown token;
``<|endoftext|>`` (id 0) separates documents in packed rows.
"""
from __future__ import annotations

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


def sample_texts(texts: list[str], budget_chars: int, seed: int) -> list[str]:
    """A seeded random sample of whole documents up to ``budget_chars`` characters."""
    order = np.random.default_rng(seed).permutation(len(texts))
    out, total = [], 0
    for i in order:
        if total >= budget_chars:
            break
        out.append(texts[i])
        total += len(texts[i])
    return out


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


def coverage_stats(tok: Tokenizer, texts: list[str]) -> dict:
    """How well the vocabulary fits held-out text: tokens per whitespace word, characters
    and UTF-8 bytes per token, and the share of distinct words that are a single token."""
    if not texts:
        return {}
    encs = tok.encode_batch_fast(texts)
    n_tokens = sum(len(e.ids) for e in encs)
    words = [w for t in texts for w in t.split()]
    distinct = sorted(set(words))
    single = sum(len(e.ids) == 1 for e in tok.encode_batch_fast([" " + w for w in distinct]))
    return {
        "tokens_per_word": n_tokens / max(1, len(words)),
        "chars_per_token": sum(len(t) for t in texts) / max(1, n_tokens),
        "bytes_per_token": sum(len(t.encode()) for t in texts) / max(1, n_tokens),
        "single_token_word_frac": single / max(1, len(distinct)),
    }

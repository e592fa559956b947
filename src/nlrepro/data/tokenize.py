"""Tokenize: encode documents, mix sources by weight, pack into fixed-length rows.

Each split becomes one stream ``doc_0 <eos> doc_1 <eos> ...`` cut into rows of
``row_len`` tokens (a row is context + 1 shifted target); the tail shorter than a row is
dropped and counted. ``pack`` builds the rows in memory (tests, small inputs); stage
tokenize streams the same rows into fixed-size ``.npy`` shards (uint16 when the vocabulary
fits) with ``token_shards.RowWriter``, and training memory-maps them (docs/DATA.md).

Mixture (train split only): a source of weight ``w`` contributes each of its documents
``floor(w)`` times plus once more with probability ``w - floor(w)`` (decided by a
stable hash of the doc_id); documents are then shuffled with the seed, so sources mix
within rows. Validation and test keep every document once, in shard order.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
from tokenizers import Tokenizer


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def encode_batch(tok: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text of one batch (the batched Rust encoder, without offsets);
    a document's ids do not depend on the batch it is encoded in."""
    dtype = token_dtype(tok.get_vocab_size())
    return [np.asarray(enc.ids, dtype=dtype) for enc in tok.encode_batch_fast(texts)]


def encode_documents(tok: Tokenizer, texts: list[str], batch_docs: int) -> list[np.ndarray]:
    """Token ids per document, encoded ``batch_docs`` at a time."""
    out: list[np.ndarray] = []
    for start in range(0, len(texts), batch_docs):
        out.extend(encode_batch(tok, texts[start:start + batch_docs]))
    return out


def _unit_hash(seed: int, doc_id: str) -> float:
    digest = hashlib.sha256(f"mix:{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def mixture_order(doc_ids: list[str], sources: list[str], weights: dict[str, float],
                  seed: int) -> list[int]:
    """Document indices of the train stream: repeated by weight, then shuffled."""
    order: list[int] = []
    for i, (doc_id, source) in enumerate(zip(doc_ids, sources)):
        w = weights[source]
        repeats = math.floor(w) + (1 if _unit_hash(seed, doc_id) < w - math.floor(w) else 0)
        order.extend([i] * repeats)
    perm = np.random.default_rng(seed).permutation(len(order))
    return [order[j] for j in perm]


def pack(docs: list[np.ndarray], order: list[int], eos_id: int, row_len: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, stream)``: the eos-separated stream of ``docs[order]`` and its first
    ``n_rows * row_len`` tokens reshaped into rows."""
    dtype = docs[0].dtype if docs else np.dtype(np.uint16)
    eos = np.asarray([eos_id], dtype=dtype)
    parts = [p for i in order for p in (docs[i], eos)]
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    n_rows = len(stream) // row_len
    return stream[: n_rows * row_len].reshape(n_rows, row_len), stream

"""Filter: normalisation, length bounds, an English/quality heuristic, exact dedup on a
stable hash and near-duplicate removal with MinHash + LSH. Every rule is counted.

Rules run in a fixed order on documents in a fixed order (sources sorted by name, each
in ingest order); the first occurrence of a duplicate is kept. Same input, same output,
byte for byte: hashes are SHA-256/BLAKE2 (never Python's salted ``hash()``) and MinHash
permutations come from a fixed seed.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from nlrepro.data.config import FilterConfig

RULES = ("too_short", "too_long", "low_alpha", "not_english", "exact_dup", "near_dup")

# Function words of modern and early-modern English: prose in either has many of them.
STOPWORDS = frozenset(
    "the a an and or but of to in on at by for with from as is are was were be been am "
    "it its this that these those he she they we you i me my his her their our your him "
    "them us not no so if then than there here what which who whom when where why how "
    "all any some do does did have has had will would shall should can could may might "
    "must thou thee thy thine hath doth art ye o".split()
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANKS = re.compile(r"\n{3,}")
_WORD = re.compile(r"[a-z']+")


def normalize(text: str) -> str:
    """NFC, Unix newlines, no control characters or trailing spaces, at most one blank
    line in a row. Newlines and indentation stay: verse and code need them."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING.sub("\n", text + "\n")
    return _BLANKS.sub("\n\n", text).strip()


def alpha_fraction(text: str) -> float:
    """Letters among non-whitespace characters."""
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def stopword_fraction(text: str) -> float:
    """Share of words that are English function words: near 0 for other languages,
    code, tables and keyword spam; 0.3-0.5 for English prose and verse."""
    words = _WORD.findall(text.lower())
    return sum(w in STOPWORDS for w in words) / len(words) if words else 0.0


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a strong 64-bit mixer (uint64 arithmetic wraps by design)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class MinHasher:
    """MinHash signatures of word shingles. Permutation ``i`` hashes a shingle as
    ``splitmix64(blake2b64(shingle) XOR s_i)`` with salts ``s_i`` from a fixed seed."""

    def __init__(self, num_perm: int, shingle_words: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.salts = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64,
                                  endpoint=True)
        self.k = shingle_words

    def shingles(self, text: str) -> np.ndarray:
        words = text.lower().split()
        grams = {" ".join(words[i:i + self.k]) for i in range(max(1, len(words) - self.k + 1))}
        return np.fromiter(
            (int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little")
             for g in sorted(grams)),
            dtype=np.uint64, count=len(grams),
        )

    def signature(self, text: str) -> np.ndarray:
        with np.errstate(over="ignore"):
            return _splitmix64(self.shingles(text)[:, None] ^ self.salts[None, :]).min(axis=0)


def lsh_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """Bands ``b`` and rows ``r`` (b * r = num_perm) whose S-curve midpoint
    ``(1/b)^(1/r)`` is closest to the threshold."""
    best = None
    for r in range(1, num_perm + 1):
        if num_perm % r:
            continue
        b = num_perm // r
        err = abs((1.0 / b) ** (1.0 / r) - threshold)
        if best is None or err < best[0]:
            best = (err, b, r)
    return best[1], best[2]


def near_duplicates(texts: list[str], cfg: FilterConfig) -> set[int]:
    """Indices of documents whose estimated Jaccard similarity with an earlier kept
    document is at least ``cfg.near_dup_threshold``."""
    if not texts:
        return set()
    hasher = MinHasher(cfg.num_perm, cfg.shingle_words)
    sigs = np.stack([hasher.signature(t) for t in texts])
    bands, rows = lsh_bands(cfg.num_perm, cfg.near_dup_threshold)
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    dropped: set[int] = set()
    for i, sig in enumerate(sigs):
        candidates = set()
        for band in range(bands):
            key = (band, sig[band * rows:(band + 1) * rows].tobytes())
            candidates.update(buckets[key])
        if any(np.mean(sigs[j] == sig) >= cfg.near_dup_threshold for j in sorted(candidates)):
            dropped.add(i)
            continue
        for band in range(bands):
            buckets[(band, sig[band * rows:(band + 1) * rows].tobytes())].append(i)
    return dropped


@dataclass
class FilterStats:
    """Documents and characters per source in and out, and dropped per rule."""
    sources: dict = field(default_factory=dict)
    rules: dict = field(default_factory=lambda: {r: {"docs": 0, "chars": 0} for r in RULES})

    def count_in(self, source: str, chars: int) -> None:
        s = self.sources.setdefault(source, {"docs_in": 0, "chars_in": 0, "docs_out": 0,
                                             "chars_out": 0})
        s["docs_in"] += 1
        s["chars_in"] += chars

    def count_out(self, source: str, chars: int) -> None:
        self.sources[source]["docs_out"] += 1
        self.sources[source]["chars_out"] += chars

    def drop(self, rule: str, chars: int) -> None:
        self.rules[rule]["docs"] += 1
        self.rules[rule]["chars"] += chars


def quality_rule(text: str, cfg: FilterConfig) -> str | None:
    """The first per-document rule that rejects ``text``, or None."""
    if len(text) < cfg.min_chars:
        return "too_short"
    if len(text) > cfg.max_chars:
        return "too_long"
    if alpha_fraction(text) < cfg.min_alpha_frac:
        return "low_alpha"
    if stopword_fraction(text) < cfg.min_stopword_frac:
        return "not_english"
    return None


def filter_documents(docs: list[tuple[str, str, str]], cfg: FilterConfig,
                     on_doc: Callable[[], None] = lambda: None
                     ) -> tuple[list[tuple[str, str, str]], FilterStats]:
    """Apply every rule to ``(doc_id, source, text)`` triples in order; ``on_doc`` is
    called once per document checked (progress)."""
    stats = FilterStats()
    kept: list[tuple[str, str, str]] = []
    raw_chars: list[int] = []  # dropped characters are counted as ingested
    seen: set[str] = set()
    for doc_id, source, raw in docs:
        on_doc()
        stats.count_in(source, len(raw))
        text = normalize(raw)
        rule = quality_rule(text, cfg)
        if rule is None:
            digest = content_hash(text)
            if digest in seen:
                rule = "exact_dup"
            seen.add(digest)
        if rule is not None:
            stats.drop(rule, len(raw))
            continue
        kept.append((doc_id, source, text))
        raw_chars.append(len(raw))
    if cfg.near_dup_threshold is not None:
        near = near_duplicates([t for _, _, t in kept], cfg)
        for i in sorted(near):
            stats.drop("near_dup", raw_chars[i])
        kept = [d for i, d in enumerate(kept) if i not in near]
    for _, source, text in kept:
        stats.count_out(source, len(text))
    return kept, stats

"""Filter: normalisation, length bounds, an English/quality heuristic, exact dedup on a
stable hash and near-duplicate removal with MinHash + LSH. Every rule is counted.

Rules run in a fixed order on documents in a fixed order (sources sorted by name, each
in ingest order); the first occurrence of a duplicate is kept. Same input, same output,
byte for byte: hashes are SHA-256/BLAKE2 (never Python's salted ``hash()``) and MinHash
permutations come from a fixed seed.
"""
from __future__ import annotations

import hashlib
import itertools
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


# ASCII fast paths: an ASCII text (most of an English web corpus) is scanned with
# bytes.translate at C speed; any other text goes through the regular expressions. Both
# give the same result (tests/test_data_filters.py checks them against the plain rules).
_ASCII_CONTROL = bytes(c for c in range(128) if _CONTROL.match(chr(c)))
# [a-z'] kept, every other byte made a space: split() then finds _WORD's runs.
_ASCII_WORDS = bytes(c if chr(c) in "abcdefghijklmnopqrstuvwxyz'" else 32 for c in range(256))
_STOPWORDS_B = frozenset(w.encode() for w in STOPWORDS)


def normalize(text: str) -> str:
    """NFC, Unix newlines, no control characters or trailing spaces, at most one blank
    line in a row. Newlines and indentation stay: verse and code need them."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii():
        raw = text.encode("ascii")
        kept = raw.translate(None, _ASCII_CONTROL)
        if len(kept) != len(raw):
            text = kept.decode("ascii")
    else:
        text = _CONTROL.sub("", text)
    text += "\n"
    if " \n" in text or "\t\n" in text:  # a substring test is far cheaper than a scan
        text = _TRAILING.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANKS.sub("\n\n", text)
    return text.strip()


# ASCII bytes that str.isspace / str.isalpha accept: an ASCII text is counted with
# bytes.translate (C speed), any other text character by character, with the same result.
_ASCII_SPACE = bytes(c for c in range(128) if chr(c).isspace())
_ASCII_ALPHA = bytes(c for c in range(128) if chr(c).isalpha())


def alpha_fraction(text: str) -> float:
    """Letters (``str.isalpha``) among non-whitespace characters (``str.isspace``)."""
    if text.isascii():
        b = text.encode("ascii")
        nonspace = len(b.translate(None, _ASCII_SPACE))
        alpha = len(b) - len(b.translate(None, _ASCII_ALPHA))
    else:  # count each distinct character once, then ask Python about it
        points, counts = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32),
                                   return_counts=True)
        chars = [(chr(p), n) for p, n in zip(points.tolist(), counts.tolist())]
        nonspace = sum(n for c, n in chars if not c.isspace())
        alpha = sum(n for c, n in chars if c.isalpha())
    return alpha / nonspace if nonspace else 0.0


def stopword_fraction(text: str) -> float:
    """Share of words (runs of ``[a-z']`` in the lower-cased text) that are English
    function words: near 0 for other languages, code, tables and keyword spam; 0.3-0.5 for
    English prose and verse."""
    if text.isascii():
        words = text.lower().encode("ascii").translate(_ASCII_WORDS).split()
        hits = sum(map(_STOPWORDS_B.__contains__, words))
    else:
        words = _WORD.findall(text.lower())
        hits = sum(map(STOPWORDS.__contains__, words))
    return hits / len(words) if words else 0.0


def content_digest(text: str) -> bytes:
    """SHA-256 of the text's UTF-8 bytes: the identity of exact duplicates."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a strong 64-bit mixer (uint64 arithmetic wraps by design)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class MinHasher:
    """MinHash signatures of word shingles, vectorised over a batch of documents.

    A document's words are ``text.lower().split()``; shingle ``i`` is words ``i..i+k-1``
    (one shingle of all words when there are fewer than ``k``). A word's 64-bit hash
    ``h(w)`` is ``splitmix64(len(w) * L + sum_t (w_t + 1) * P^t)`` over its UTF-8 bytes
    ``w_t`` (mod 2^64, ``P`` and ``L`` odd), computed for all words of a batch of
    documents at once with array operations; a shingle's is
    ``g_i = splitmix64(sum_j c_j * h(w_{i+j}))`` with odd ``c_j``: the same k words in the
    same order give the same ``g``, others collide with probability ~2^-64. Permutation ``p`` maps the low 32 bits ``x`` of
    ``g`` to ``a_p * x + b_p`` (mod 2^32, ``a_p`` odd: a bijection), and the signature is
    the minimum of each over the shingles (uint32). The ``x`` are random 32-bit values,
    so two affine maps of them order the shingles nearly independently
    (``test_minhash_estimates_jaccard_like_independent_permutations`` checks bias and
    spread against the binomial), at 2 array operations per permutation instead of a full
    mixer's 9, in 32-bit lanes (twice as many per vector instruction as 64-bit ones): the
    signature was most of the filter's time. Two shingles share an ``x`` with probability
    2^-32, too rarely to move an estimate. Constants come from a fixed seed, so signatures
    are the same in every process and on every machine.
    """

    BLOCK = 2048  # shingles per block: bounds the (block, num_perm) work array

    def __init__(self, num_perm: int, shingle_words: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        top = np.iinfo(np.uint64).max

        def draw(n: int) -> np.ndarray:
            return rng.integers(0, top, size=n, dtype=np.uint64, endpoint=True)
        self.a = (draw(num_perm) | np.uint64(1)).astype(np.uint32)  # odd: a bijection
        self.b = draw(num_perm).astype(np.uint32)
        self.c = draw(shingle_words) | np.uint64(1)
        self.k = shingle_words
        self.P, self.L = draw(1)[0] | np.uint64(1), draw(1)[0] | np.uint64(1)
        self._pow = np.ones(1, dtype=np.uint64)
        self._work = np.empty((self.BLOCK, num_perm), dtype=np.uint32)

    @property
    def num_perm(self) -> int:
        return self.a.size

    def word_hashes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``h(w)`` of every word of the documents, in order (a document without words
        has one empty word), and the number of words of each document. All documents
        are hashed in one set of array operations (numpy's per-call cost is what a
        document-at-a-time loop pays most)."""
        words = [t.lower().split() or [""] for t in texts]
        counts = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        # every word, the last included, ends at a space: no word is cut by the ends
        buf = (" ".join(itertools.chain.from_iterable(words)) + " ").encode("utf-8")
        data = np.frombuffer(buf, dtype=np.uint8)
        space = data == 32  # UTF-8 multi-byte sequences never contain byte 32
        ends = np.flatnonzero(space)
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts
        if int(lengths.max()) + 1 > self._pow.size:  # powers of P, grown on demand
            pw = np.cumprod(np.full(int(lengths.max()) + 1, self.P, dtype=np.uint64))
            self._pow = np.concatenate(([np.uint64(1)], pw[:-1]))
        pos = np.arange(data.size) - starts[np.cumsum(space) - space]  # offset in its word
        with np.errstate(over="ignore"):
            terms = (data.astype(np.uint64) + np.uint64(1)) * self._pow[pos]
            terms[space] = 0
            h = np.add.reduceat(terms, starts)  # word i: its bytes and its final space
            return splitmix64(h + lengths.astype(np.uint64) * self.L), counts

    def shingles(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The 64-bit hashes ``g`` of every document's shingles, in order (with repeats:
        a repeat does not change a minimum), and the number of shingles of each."""
        w, counts = self.word_hashes(texts)
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))  # first word of each doc
        m = np.maximum(1, counts - self.k + 1)  # shingles per document
        doc = np.repeat(np.arange(len(texts)), m)
        start = first[doc] + np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
        end = (first + counts)[doc]
        g = np.zeros(start.size, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(self.k):
                idx = start + j
                inside = idx < end  # a document shorter than k words: fewer terms
                if not inside.any():
                    break
                term = self.c[j] * w[np.minimum(idx, w.size - 1)]
                term[~inside] = 0
                g += term
            return splitmix64(g), m

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32: ``min_i (a_p * x_i + b_p) mod 2^32`` over each
        document's shingles (``x_i`` the low 32 bits of ``g_i``), for every ``p``."""
        g, m = self.shingles(texts)
        x = g.astype(np.uint32)  # low 32 bits: 32-bit products are twice as fast as 64
        bounds = np.concatenate(([0], np.cumsum(m))).tolist()
        sig = np.full((len(texts), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        for d in range(len(texts)):
            for lo in range(bounds[d], bounds[d + 1], self.BLOCK):
                block = x[lo:min(lo + self.BLOCK, bounds[d + 1]), None]
                z = self._work[:block.shape[0]]  # reused: a fresh array costs page faults
                np.multiply(block, self.a[None, :], out=z)
                z += self.b
                np.minimum(sig[d], z.min(axis=0), out=sig[d])
        return sig

    def signature(self, text: str) -> np.ndarray:
        """The signature of one document (``signatures([text])[0]``)."""
        return self.signatures([text])[0]


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
    sigs = np.concatenate([hasher.signatures(texts[i:i + 8]) for i in range(0, len(texts), 8)])
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
    seen: set[bytes] = set()
    for doc_id, source, raw in docs:
        on_doc()
        stats.count_in(source, len(raw))
        text = normalize(raw)
        rule = quality_rule(text, cfg)
        if rule is None:
            digest = content_digest(text)
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

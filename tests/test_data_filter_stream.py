"""The filter's fast paths and its bounded-memory passes, against plain references:
normalize / alpha_fraction / stopword_fraction against the character-by-character rules
on random Unicode; the vectorised MinHash against a pure-Python one, and its Jaccard
estimates against the binomial; the dedup decisions on hand-made signatures; the
streaming filter (one part or several) against filter_documents, byte for byte."""
from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlrepro.data.config import FilterConfig
from nlrepro.data.filter_stream import (EXACT, KEEP, NEAR, DocWriter, Part, Parts,
                                        dedup_decisions, filter_to_parquet, merge_stats)
from nlrepro.data.filters import (STOPWORDS, MinHasher, alpha_fraction, filter_documents,
                                  normalize, stopword_fraction)
from nlrepro.io import write_table

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


# --- the plain rules (the definitions the fast paths must match) -----------------------

def ref_normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)
    text = re.sub(r"[ \t]+\n", "\n", text + "\n")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def ref_alpha(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def ref_stopwords(text: str) -> float:
    words = re.findall(r"[a-z']+", text.lower())
    return sum(w in STOPWORDS for w in words) / len(words) if words else 0.0


ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCXYZ'0123456789 .,;-") + [
    " ", " ", "\t", "\n", "\n", "\r", "\r\n", "\x00", "\x07", "\x0b", "\x0c", "\x1c", "\x7f",
    "é", "e\u0301", "ß", "²", "½", "Ω", "中", "文", "😀", "\u00a0", "\u2003", "\u2028", "İ",
    "the ", "and ", "thou ", "of "]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pool = ALPHABET[:48 + 5] if i % 2 else ALPHABET  # half of them ASCII only
        out.append("".join(rng.choice(pool, int(rng.integers(0, 80)))))
    return out


def test_fast_paths_equal_the_plain_rules_on_random_unicode():
    texts = random_texts(3000)
    assert sum(t.isascii() for t in texts) > 1000 and sum(not t.isascii() for t in texts) > 1000
    for t in texts:
        assert normalize(t) == ref_normalize(t), repr(t)
        n = ref_normalize(t)
        for x in (t, n):
            assert alpha_fraction(x) == ref_alpha(x), repr(x)
            assert stopword_fraction(x) == ref_stopwords(x), repr(x)


# --- MinHash ------------------------------------------------------------------------------

def splitmix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_signature(h: MinHasher, text: str) -> list[int]:
    """The MinHasher docstring's equations in Python integers, one shingle at a time."""
    P, L = int(h.P), int(h.L)
    words = text.lower().split() or [""]
    wh = []
    for w in words:
        acc = 0
        for t, byte in enumerate(w.encode("utf-8")):
            acc = (acc + (byte + 1) * pow(P, t, 1 << 64)) & M64
        wh.append(splitmix((acc + len(w.encode("utf-8")) * L) & M64))
    k = h.k
    g = [splitmix(sum(int(h.c[j]) * wh[i + j] for j in range(min(k, len(wh)))) & M64)
         for i in range(max(1, len(wh) - k + 1))]
    return [min((int(a) * (x & M32) + int(b)) & M32 for x in g) for a, b in zip(h.a, h.b)]


@pytest.mark.parametrize("text", ["", "one", "two words", "The quick brown fox jumps over",
                                  "Ünïcödé wörds   and\ttabs\nand lines, thou art 中文 😀 " * 3])
def test_minhash_equals_the_plain_python_equations(text):
    h = MinHasher(num_perm=16, shingle_words=5)
    assert h.signature(text).tolist() == ref_signature(h, text)


def test_minhash_blocks_give_the_same_signature():
    h = MinHasher(num_perm=32, shingle_words=3)
    text = " ".join(f"w{i % 997}" for i in range(5000))  # 2,498 shingles: two blocks
    full = h.signature(text)
    h.BLOCK = 100
    assert (h.signature(text) == full).all()


def test_a_batch_of_documents_gives_each_one_its_own_signature():
    h = MinHasher(num_perm=32, shingle_words=4)
    texts = random_texts(60, seed=5) + ["", "a", "a b c", "  ", "x " * 3000]
    one = np.stack([h.signatures([t])[0] for t in texts])
    h.BLOCK = 50  # blocks that cut documents in two
    assert (h.signatures(texts) == one).all()
    assert all(h.signature(t).tolist() == ref_signature(h, t) for t in texts[::7])


def test_minhash_estimates_jaccard_like_independent_permutations():
    """Pairs of word sets with a known Jaccard J: the share of equal signature values has
    mean J and spread sqrt(J(1-J)/P), as independent random permutations would give."""
    h = MinHasher(num_perm=128, shingle_words=1)
    rng = np.random.default_rng(0)
    for jac, size in ((0.5, 150), (0.8, 450), (0.9, 950)):
        shared = int(round(2 * jac * size / (1 + jac)))  # |A & B| / |A | B| = jac
        est = []
        for trial in range(200):
            words = [f"t{trial}w{i}" for i in range(2 * size - shared)]
            rng.shuffle(words)
            a, b = words[:size], words[size - shared:]
            est.append(np.mean(h.signature(" ".join(a)) == h.signature(" ".join(b))))
        true = shared / (2 * size - shared)
        sd = np.sqrt(true * (1 - true) / 128)
        assert abs(np.mean(est) - true) < 4 * sd / np.sqrt(200), (jac, np.mean(est), true)
        assert 0.8 * sd < np.std(est) < 1.25 * sd, (jac, np.std(est), sd)


# --- dedup decisions on hand-made signatures ------------------------------------------

def test_dedup_decisions_follow_the_rules():
    cfg = FilterConfig()  # 128 permutations, threshold 0.8: 8 bands x 16 rows
    rng = np.random.default_rng(1)
    a = rng.integers(0, 1 << 31, 128, dtype=np.uint32)
    b = a.copy()
    b[:10] += np.uint32(1)       # 118/128 equal, bands 1-7 shared with a: near
    c = b.copy()                 # = b: near a (b itself was dropped, a is kept)
    d = rng.integers(0, 1 << 31, 128, dtype=np.uint32)
    d[16:32] = a[16:32]          # shares band 1 with a, 16/128 equal: kept
    e = a.copy()
    e[::8] += np.uint32(1)       # 112/128 equal but no band intact: LSH misses it, kept
    f = rng.integers(0, 1 << 31, 128, dtype=np.uint32)
    sigs = np.stack([a, b, c, d, e, f, f])
    digests = np.array([bytes([i]) * 32 for i in (0, 1, 2, 3, 4, 5, 0)], dtype="S32")
    rule = dedup_decisions(digests, lambda: iter([sigs[:4], sigs[4:]]), lambda i: sigs[i], cfg)
    # the last one repeats the first one's digest: exact, whatever its signature
    assert rule.tolist() == [KEEP, NEAR, NEAR, KEEP, KEEP, KEEP, EXACT]
    off = FilterConfig(near_dup_threshold=None)
    assert dedup_decisions(digests, None, None, off).tolist() == [KEEP] * 6 + [EXACT]


# --- the streaming filter against filter_documents --------------------------------------

PROSE = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
         "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
         "incredulity, it was the season of light, it was the season of darkness")


def docs(n: int = 240, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(seed)
    vocab = PROSE.replace(",", "").split() + [f"w{i}" for i in range(100)]
    out: list[str] = []
    for i in range(n):
        r = rng.random()
        if r < 0.1 and out:
            out.append(out[int(rng.integers(len(out)))] + "  \r\n")
        elif r < 0.25 and out:
            words = out[int(rng.integers(len(out)))].split(" ")
            words[int(rng.integers(len(words)))] = "zebra"
            out.append(" ".join(words))
        elif r < 0.3:
            out.append("short")
        elif r < 0.35:
            out.append(" ".join("zxq" * 3 for _ in range(80)))
        else:
            out.append(" ".join(rng.choice(vocab, int(rng.integers(60, 160)))))
    return [(f"d{i:04d}", ("web", "books")[i % 2], t) for i, t in enumerate(out)]


CFG = FilterConfig(min_chars=100, shingle_words=3)


def as_table(kept) -> pa.Table:
    return pa.table({"doc_id": [d for d, _, _ in kept], "source": [s for _, s, _ in kept],
                     "text": [t for _, _, t in kept]})


def test_streaming_filter_writes_what_filter_documents_keeps(tmp_path):
    corpus = docs()
    kept, stats = filter_documents(corpus, CFG)
    assert stats.rules["near_dup"]["docs"] and stats.rules["exact_dup"]["docs"]
    assert stats.rules["too_short"]["docs"] and stats.rules["not_english"]["docs"]
    n, stats2 = filter_to_parquet(iter(corpus), CFG, tmp_path / "out.parquet", tmp_path / "s", 32)
    write_table(tmp_path / "ref.parquet", as_table(kept), row_group_size=32)
    assert n == len(kept)
    assert (tmp_path / "out.parquet").read_bytes() == (tmp_path / "ref.parquet").read_bytes()
    assert stats2.sources == stats.sources and stats2.rules == stats.rules


@pytest.mark.parametrize("near", [0.8, None])
def test_several_parts_decide_like_one(tmp_path, near):
    """The engine's layout: pass 1 on parts, passes 2 and 3 over the parts in order."""
    cfg = FilterConfig(min_chars=100, shingle_words=3, near_dup_threshold=near)
    corpus = docs(300, seed=2)
    kept, stats = filter_documents(corpus, cfg)
    assert stats.rules["exact_dup"]["docs"] and (near is None) == (
        stats.rules["near_dup"]["docs"] == 0)
    parts = [Part(tmp_path / f"{k:05d}") for k in range(4)]
    for k, part in enumerate(parts):
        part.first_pass(iter(corpus[k * 80:(k + 1) * 80]), cfg)
    assert not list(tmp_path.glob(".*.tmp*"))  # renamed into place
    merged = merge_stats(parts)
    rule = Parts(parts, cfg.num_perm).decide(cfg)
    n = Parts(parts, cfg.num_perm).write_kept(rule, tmp_path / "out.parquet", 16, merged)
    t = pq.read_table(tmp_path / "out.parquet")
    assert list(zip(t["doc_id"].to_pylist(), t["source"].to_pylist(),
                    t["text"].to_pylist())) == kept and n == len(kept)
    assert merged.sources == stats.sources and merged.rules == stats.rules


def test_signatures_read_by_row_equal_the_chunks(tmp_path):
    cfg = FilterConfig(min_chars=100, shingle_words=3)
    parts = [Part(tmp_path / "a"), Part(tmp_path / "b")]
    corpus = docs(120, seed=3)
    parts[0].first_pass(iter(corpus[:50]), cfg)
    parts[1].first_pass(iter(corpus[50:]), cfg)
    reader = Parts(parts, cfg.num_perm)
    chunks = np.concatenate(list(reader.sig_chunks()))
    assert len(chunks) == len(reader.digests()) == reader.offsets[-1]
    assert all((reader.sig_row(i) == chunks[i]).all() for i in range(len(chunks)))
    reader.close()


def test_doc_writer_is_write_table_byte_for_byte(tmp_path):
    rows = [(f"id{i}", "s", "text " * (i % 7)) for i in range(70)]
    w = DocWriter(tmp_path / "a.parquet", 16)
    for r in rows:
        w.add(*r)
    w.close()
    write_table(tmp_path / "b.parquet", as_table(rows), row_group_size=16)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert hashlib.sha256((tmp_path / "a.parquet").read_bytes()).hexdigest()

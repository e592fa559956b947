"""The filter in bounded memory, in one process: ``filter_documents``' rules and
decisions, byte for byte, without holding the corpus.

Three passes over a scratch directory:
  1. documents one at a time: normalize + quality rules; each document that passes is
     appended to a parquet file (normalised text and raw length), its SHA-256 digest and
     MinHash signature to flat binary files (``Part.first_pass``);
  2. the dedup decisions (``dedup_decisions``) read the digests (32 bytes per document)
     and the signatures a chunk at a time, plus the rows of the few documents that share
     an LSH band (``Parts.decide``);
  3. the passed documents are streamed into the output, skipping the dropped ones
     (``Parts.write_kept``).

The engine (nlrepro.data.engine) runs pass 1 on many parts in parallel and passes 2 and
3 on the parts in order: the same files, so the same output for any number of workers.

What grows with the corpus is bookkeeping, never the texts or the signatures: in pass 1
the set of digests seen in the part (about 90 bytes per distinct document; in process
the part is the whole corpus), in pass 2 about 130 bytes per document that passed the
quality rules (digest, band keys, flags, sort buffers).
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nlrepro.data.config import FilterConfig
from nlrepro.data.filters import (FilterStats, MinHasher, content_digest, lsh_bands,
                                  normalize, quality_rule, splitmix64)
from nlrepro.data.shards import iter_batches

KEEP, EXACT, NEAR = 0, 1, 2
DOC_SCHEMA = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string())])
_CHUNK = 16384  # signature rows read at a time in pass 2 (8 MB at 128 permutations)
PASSED_SCHEMA = DOC_SCHEMA.append(pa.field("raw_chars", pa.int64()))
PASSED_GROUP = 256  # rows per row group of the scratch parquet (bounds its buffers)
SIGNATURE_BATCH = 8  # documents whose signatures are computed in one call (measured best)


class DocWriter:
    """Rows ``(doc_id, source, text)`` into a parquet file in row groups of ``group``
    documents, with ``nlrepro.io.write_table``'s settings: the file is byte-identical to
    ``write_table`` of the same rows with ``row_group_size=group``."""

    def __init__(self, path: Path, group: int, schema: pa.Schema = DOC_SCHEMA,
                 compression: str = "zstd"):
        self.path, self.group, self.schema = Path(path), group, schema
        self.rows: list[tuple] = []
        self.writer = pq.ParquetWriter(self.path, schema, compression=compression,
                                       use_dictionary=False, write_statistics=False,
                                       store_schema=True)

    def add(self, *row) -> None:
        self.rows.append(row)
        if len(self.rows) == self.group:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            cols = list(zip(*self.rows))
            self.writer.write_table(pa.table({f.name: list(c) for f, c in
                                              zip(self.schema, cols)}, schema=self.schema),
                                    row_group_size=self.group)
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: a 64-bit hash of each band's ``rows`` signature values (equal
    bands give equal keys; different ones collide with probability ~2^-64)."""
    keys = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            keys = splitmix64(keys ^ sig[:, r::rows][:, :bands].astype(np.uint64))
    return keys


def shared_bands(sig_chunks: Callable[[], Iterable[np.ndarray]], n: int, bands: int,
                 rows: int) -> np.ndarray:
    """(n, bands) bool: document i shares band b with at least one other document."""
    keys = np.empty((n, bands), dtype=np.uint64)
    start = 0
    for chunk in sig_chunks():
        keys[start:start + len(chunk)] = band_keys(chunk, bands, rows)
        start += len(chunk)
    shared = np.zeros((n, bands), dtype=bool)
    for b in range(bands):
        _, inverse, counts = np.unique(keys[:, b], return_inverse=True, return_counts=True)
        shared[:, b] = counts[inverse] >= 2
    return shared


def dedup_decisions(digests: np.ndarray, sig_chunks: Callable[[], Iterable[np.ndarray]] | None,
                    sig_row: Callable[[int], np.ndarray] | None, cfg: FilterConfig
                    ) -> np.ndarray:
    """KEEP / EXACT / NEAR per document, in document order, with ``filter_documents``'
    semantics: an exact duplicate repeats the SHA-256 of an earlier document; a near
    duplicate shares an LSH band (``lsh_bands``: ``b`` bands of ``r`` rows) with an earlier
    KEPT document whose estimated Jaccard (share of equal signature values) is at least
    ``cfg.near_dup_threshold``. ``digests``: (n,) S32; ``sig_chunks()`` yields the
    signatures in order, ``sig_row(i)`` one of them (None: near dedup off)."""
    n = len(digests)
    rule = np.full(n, KEEP, dtype=np.int8)
    if n:
        _, first = np.unique(digests, return_index=True)
        rule[:] = EXACT
        rule[first] = KEEP
    if cfg.near_dup_threshold is None or sig_chunks is None or not n:
        return rule
    bands, rows = lsh_bands(cfg.num_perm, cfg.near_dup_threshold)
    shared = shared_bands(sig_chunks, n, bands, rows)
    # (band, the band's values) -> kept documents in it; rows are read again when needed
    # (positioned reads of num_perm * 4 bytes) rather than cached, so memory stays a few bytes a document
    kept_in: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for x in np.flatnonzero(shared.any(axis=1) & (rule == KEEP)).tolist():
        sig = sig_row(x)
        keys = [(b, sig[b * rows:(b + 1) * rows].tobytes()) for b in np.flatnonzero(shared[x])]
        if any(np.mean(sig_row(j) == sig) >= cfg.near_dup_threshold
               for key in keys for j in kept_in[key]):
            rule[x] = NEAR
            continue
        for key in keys:
            kept_in[key].append(x)
    return rule


class Part:
    """What pass 1 leaves of a run of documents, under one path prefix: the documents
    that passed the quality rules (``.passed.parquet``: doc_id, source, normalised text,
    raw length), their SHA-256 digests (``.digests``, 32 bytes each), their signatures
    (``.sig``, num_perm little-endian uint32 each, zeros for a repeat of an earlier
    digest of the part, which pass 2 drops anyway; near dedup only) and the counts of the
    per-document rules (``.stats.json``)."""

    def __init__(self, prefix: Path):
        self.prefix = Path(prefix)

    def file(self, suffix: str) -> Path:
        return self.prefix.with_name(self.prefix.name + suffix)

    def first_pass(self, docs: Iterable[tuple[str, str, str]], cfg: FilterConfig,
                   on_doc: Callable[[], None] = lambda: None) -> FilterStats:
        """Pass 1 over ``(doc_id, source, text)`` triples; files are written under
        temporary names and renamed at the end, so a part is whole or absent."""
        stats = FilterStats()
        hasher = (MinHasher(cfg.num_perm, cfg.shingle_words)
                  if cfg.near_dup_threshold is not None else None)
        tmp = Part(self.prefix.with_name(f".{self.prefix.name}.{os.getpid()}.tmp"))
        width = cfg.num_perm * 4
        seen: set[bytes] = set()  # digests of this part so far
        passed = DocWriter(tmp.file(".passed.parquet"), PASSED_GROUP, PASSED_SCHEMA, "none")
        pending: list[str | None] = []  # texts awaiting their signature (None: a repeat)

        def flush_signatures(sigs) -> None:
            texts = [t for t in pending if t is not None]
            rows = iter(hasher.signatures(texts) if texts else ())
            for t in pending:
                sigs.write(bytes(width) if t is None else
                           next(rows).astype("<u4", copy=False).tobytes())
            pending.clear()

        with tmp.file(".digests").open("wb") as digests, \
                tmp.file(".sig").open("wb") as sigs:
            for doc_id, source, raw in docs:
                on_doc()
                stats.count_in(source, len(raw))
                text = normalize(raw)
                rule = quality_rule(text, cfg)
                if rule is not None:
                    stats.drop(rule, len(raw))
                    continue
                passed.add(doc_id, source, text, len(raw))
                digest = content_digest(text)
                digests.write(digest)
                if hasher is None:
                    continue
                # a repeat of this part's digests is dropped by pass 2 whatever its
                # signature: zeros stand in for it
                pending.append(None if digest in seen else text)
                seen.add(digest)
                if len(pending) == SIGNATURE_BATCH:
                    flush_signatures(sigs)
            if hasher is not None:
                flush_signatures(sigs)
        passed.close()
        tmp.file(".stats.json").write_text(json.dumps({"sources": stats.sources,
                                                       "rules": stats.rules}))
        for suffix in (".passed.parquet", ".digests", ".sig", ".stats.json"):
            os.replace(tmp.file(suffix), self.file(suffix))
        return stats

    def stats(self) -> FilterStats:
        saved = json.loads(self.file(".stats.json").read_text())
        return FilterStats(sources=saved["sources"], rules=saved["rules"])


class Parts:
    """Parts in global order, read as one sequence (pass 2 and 3)."""

    def __init__(self, parts: list[Part], width: int):
        self.parts, self.width = parts, width
        sizes = [p.file(".digests").stat().st_size // 32 for p in parts]
        self.offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self._fds: dict[int, int] = {}

    def digests(self) -> np.ndarray:
        return np.concatenate([np.fromfile(p.file(".digests"), dtype="S32")
                               for p in self.parts]) if self.parts else np.zeros(0, "S32")

    def sig_chunks(self) -> Iterable[np.ndarray]:
        """The signatures in order, at most ``_CHUNK`` rows at a time."""
        for p in self.parts:
            with p.file(".sig").open("rb") as f:
                while block := f.read(_CHUNK * self.width * 4):
                    yield np.frombuffer(block, dtype="<u4").reshape(-1, self.width)

    def sig_row(self, i: int) -> np.ndarray:
        """Signature ``i`` (global index), by a positioned read: a memory map would count
        every page it touched as resident."""
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        if k not in self._fds:
            self._fds[k] = os.open(self.parts[k].file(".sig"), os.O_RDONLY)
        size = self.width * 4
        return np.frombuffer(os.pread(self._fds[k], size, (i - int(self.offsets[k])) * size),
                             dtype="<u4")

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def decide(self, cfg: FilterConfig) -> np.ndarray:
        """Pass 2: KEEP / EXACT / NEAR per passed document (``dedup_decisions``)."""
        near = cfg.near_dup_threshold is not None
        try:
            return dedup_decisions(self.digests(), self.sig_chunks if near else None,
                                   self.sig_row if near else None, cfg)
        finally:
            self.close()

    def write_kept(self, rule: np.ndarray, out: Path, row_group: int,
                   stats: FilterStats) -> int:
        """Pass 3: the kept documents, in order, into the parquet file ``out``; the
        dedup drops and the documents out are added to ``stats``."""
        writer = DocWriter(out, row_group)
        i, kept = 0, 0
        for p in self.parts:
            for batch in iter_batches(p.file(".passed.parquet"), PASSED_SCHEMA.names,
                                      PASSED_GROUP):
                cols = [batch.column(k).to_pylist() for k in range(4)]
                for doc_id, source, text, raw in zip(*cols):
                    if rule[i] == KEEP:
                        writer.add(doc_id, source, text)
                        stats.count_out(source, len(text))
                        kept += 1
                    else:
                        stats.drop("exact_dup" if rule[i] == EXACT else "near_dup", raw)
                    i += 1
        writer.close()
        return kept


def merge_stats(parts: list[Part]) -> FilterStats:
    """The per-document counts of several parts, summed (sources in order of first
    appearance, as one pass over the parts in order would have them)."""
    stats = FilterStats()
    for p in parts:
        saved = p.stats()
        for src, v in saved.sources.items():
            entry = stats.sources.setdefault(src, {k: 0 for k in v})
            for k in v:
                entry[k] += v[k]
        for rule, v in saved.rules.items():
            stats.rules[rule]["docs"] += v["docs"]
            stats.rules[rule]["chars"] += v["chars"]
    return stats


def filter_to_parquet(docs: Iterable[tuple[str, str, str]], cfg: FilterConfig, out: Path,
                      scratch: Path, row_group: int,
                      on_doc: Callable[[], None] = lambda: None,
                      timings: dict | None = None) -> tuple[int, FilterStats]:
    """``filter_documents`` of ``(doc_id, source, text)`` triples (any iterable, read
    once) written to the parquet file ``out`` (row groups of ``row_group`` documents);
    ``scratch`` is a directory for the passes' files. Returns the number of kept
    documents and the counts; ``timings`` (optional) receives seconds per pass."""
    timings = {} if timings is None else timings
    scratch.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    part = Part(scratch / "all")
    stats = part.first_pass(docs, cfg, on_doc)
    timings["1_rules_signatures"] = time.perf_counter() - start
    start = time.perf_counter()
    parts = Parts([part], cfg.num_perm)
    rule = parts.decide(cfg)
    timings["2_decide"] = time.perf_counter() - start
    start = time.perf_counter()
    kept = parts.write_kept(rule, out, row_group, stats)
    timings["3_write"] = time.perf_counter() - start
    return kept, stats

"""Shard: split filtered documents by document into train/val/test and write fixed-size
parquet shards plus a manifest.

The split is decided per source by ranking documents on SHA-256 of ``seed:doc_id``:
exact, stable under adding other sources, and a document lands in exactly one split.
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nlrepro.data.config import SplitConfig
from nlrepro.errors import NLReproError
from nlrepro.io import read_table, sha256_file, write_table

SPLITS = ("train", "val", "test")
COLUMNS = ["doc_id", "source", "text"]


def stable_rank(seed: int, doc_id: str) -> str:
    return hashlib.sha256(f"{seed}:{doc_id}".encode("utf-8")).hexdigest()


def assign_splits(doc_ids: list[str], sources: list[str], cfg: SplitConfig, seed: int
                  ) -> list[str]:
    """Split name per document; per source ``ceil(n * frac)`` go to val, then test."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, source in enumerate(sources):
        by_source[source].append(i)
    split = ["train"] * len(doc_ids)
    for idx in by_source.values():
        ranked = sorted(idx, key=lambda i: stable_rank(seed, doc_ids[i]))
        n_val = math.ceil(len(ranked) * cfg.val_frac)
        n_test = math.ceil(len(ranked) * cfg.test_frac)
        for i in ranked[:n_val]:
            split[i] = "val"
        for i in ranked[n_val:n_val + n_test]:
            split[i] = "test"
    return split


def write_shards(table: pa.Table, out_dir: Path, cfg: SplitConfig, docs_per_shard: int,
                 seed: int) -> dict:
    """Write ``out_dir/<split>/shard-NNNNN.parquet`` from an in-memory table; return the
    manifest (the same files as ``stream_shards`` of that table written to parquet)."""
    doc_ids = table.column("doc_id").to_pylist()
    sources = table.column("source").to_pylist()
    splits = assign_splits(doc_ids, sources, cfg, seed)
    batches = table.select(COLUMNS).to_batches(max_chunksize=docs_per_shard)
    return _write_split_shards(batches, splits, out_dir, docs_per_shard)


def stream_shards(path: Path, out_dir: Path, cfg: SplitConfig, docs_per_shard: int,
                  seed: int) -> dict:
    """``write_shards`` of the parquet file ``path`` in bounded memory: the split is
    decided from the doc_id and source columns alone, then the documents are read in
    record batches and each split's open shard is written as soon as it fills."""
    meta = pa.Table.from_batches(list(iter_batches(path, ["doc_id", "source"], 65536)))
    doc_ids = meta.column("doc_id").to_pylist() if meta.num_rows else []
    sources = meta.column("source").to_pylist() if meta.num_rows else []
    del meta
    splits = assign_splits(doc_ids, sources, cfg, seed)
    del doc_ids, sources
    return _write_split_shards(iter_batches(path, COLUMNS, docs_per_shard), splits, out_dir,
                               docs_per_shard)


class _ShardSink:
    """One split's shards: documents are buffered until ``docs_per_shard`` are in, then
    written as the next shard (the last may be shorter)."""

    def __init__(self, name: str, out_dir: Path, docs_per_shard: int):
        self.name, self.out_dir, self.size = name, out_dir, docs_per_shard
        self.pending: list[pa.Table] = []
        self.count = 0
        self.shards: list[dict] = []
        self.per_source: dict[str, int] = defaultdict(int)
        self.docs = 0

    def add(self, part: pa.Table) -> None:
        while part.num_rows:
            take = min(part.num_rows, self.size - self.count)
            self.pending.append(part.slice(0, take))
            self.count += take
            part = part.slice(take)
            if self.count == self.size:
                self.flush()

    def flush(self) -> None:
        if not self.count:
            return
        # One contiguous table, so the file does not depend on how the rows arrived.
        part = pa.concat_tables(self.pending).combine_chunks()
        path = self.out_dir / self.name / f"shard-{len(self.shards):05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_table(path, part)
        for s in part.column("source").to_pylist():
            self.per_source[s] += 1
        self.shards.append({
            "file": f"{self.name}/{path.name}",
            "docs": part.num_rows,
            "chars": sum(len(t) for t in part.column("text").to_pylist()),
            "sha256": sha256_file(path),
        })
        self.docs += part.num_rows
        self.pending, self.count = [], 0

    def entry(self) -> dict:
        return {"docs": self.docs, "docs_per_source": dict(self.per_source),
                "shards": self.shards}


def _write_split_shards(batches: Iterable[pa.RecordBatch], splits: list[str], out_dir: Path,
                        docs_per_shard: int) -> dict:
    """Route each document of ``batches`` (in order) to its split's shard sink."""
    if "train" not in splits:
        raise NLReproError("shard: the train split is empty (too few documents)")
    sinks = {name: _ShardSink(name, out_dir, docs_per_shard) for name in SPLITS}
    labels = pa.array(splits)
    start = 0
    for batch in batches:
        table = pa.Table.from_batches([batch])
        mine = labels.slice(start, batch.num_rows)
        for name, sink in sinks.items():
            sink.add(table.filter(pc.equal(mine, name)))
        start += batch.num_rows
    for sink in sinks.values():
        sink.flush()
    manifest: dict = {"docs_per_shard": docs_per_shard, "splits": {}}
    for name, sink in sinks.items():
        manifest["splits"][name] = sink.entry()
    return manifest


def read_split(shard_dir: Path, manifest: dict, split: str) -> pa.Table:
    """All documents of one split, in shard order; corrupt shards are clear errors."""
    entries = manifest["splits"].get(split, {}).get("shards", [])
    tables = [read_table(shard_dir / e["file"], COLUMNS) for e in entries]
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in COLUMNS})
    return pa.concat_tables(tables)


def split_files(shard_dir: Path, manifest: dict, split: str) -> list[Path]:
    """The parquet shards of one split, in order."""
    return [Path(shard_dir) / e["file"] for e in manifest["splits"].get(split, {}).get("shards", [])]


def iter_batches(path: Path, columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns`` of one parquet file (only those columns are decoded);
    a missing, corrupt or wrongly shaped file is one clear error naming it."""
    if not Path(path).exists():
        raise NLReproError(f"{path}: file not found")
    try:
        # pre_buffer (pyarrow's default) caches every range it read until the file is
        # closed: reading a file batch by batch would then hold all of it
        pf = pq.ParquetFile(path, pre_buffer=False)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise NLReproError(f"{path}: missing column '{missing[0]}'")
        yield from pf.iter_batches(batch_size=batch_size, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise NLReproError(f"{path}: corrupt or unreadable parquet ({type(exc).__name__})") from None


def iter_split(shard_dir: Path, manifest: dict, split: str, columns: list[str],
               batch_size: int) -> Iterator[pa.RecordBatch]:
    """Record batches of one split's documents, in shard order (bounded memory)."""
    for path in split_files(shard_dir, manifest, split):
        yield from iter_batches(path, columns, batch_size)

"""The engine's input and output ends, in process (no datatrove): the sources cut into
fixed-size parts (datatrove shards work by FILE: rank r reads parts[r::world]), each row
tagged with its global index; and the k-way merge of the per-rank results by that index.
"""
from __future__ import annotations

import gzip
import heapq
import json
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq


def write_parts(sources: dict[str, Path], folder: Path, part_docs: int) -> int:
    """Cut the sources (sorted by name, each in its row order) into parquet parts of
    ``part_docs`` rows (doc_id, text, source, gidx); return the number of documents.
    Reads a record batch at a time: memory bounded by a part."""
    folder.mkdir(parents=True, exist_ok=True)
    buf: list[pa.RecordBatch] = []
    total, part = 0, 0

    def flush(rows: list[pa.RecordBatch]) -> None:
        nonlocal part
        pq.write_table(pa.Table.from_batches(rows), folder / f"{part:05d}.parquet")
        part += 1

    for name in sorted(sources):
        for batch in pq.ParquetFile(sources[name]).iter_batches(
                batch_size=part_docs, columns=["doc_id", "text"]):
            n = batch.num_rows
            batch = pa.RecordBatch.from_arrays(
                [batch.column(0), batch.column(1), pa.array([name] * n, pa.string()),
                 pa.array(range(total, total + n), pa.int64())],
                names=["doc_id", "text", "source", "gidx"])
            total += n
            buf.append(batch)
            while sum(b.num_rows for b in buf) >= part_docs:
                table = pa.Table.from_batches(buf)
                flush(table.slice(0, part_docs).to_batches())
                rest = table.slice(part_docs)
                buf = rest.to_batches() if rest.num_rows else []
    if buf:
        flush(buf)
    return total


def _read_rank(path: Path) -> Iterator[tuple[int, str, str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            meta = doc["metadata"]
            yield meta["gidx"], doc["id"], meta["source"], doc["text"]


def merge_ranks(folder: Path) -> list[tuple[str, str, str]]:
    """The kept ``(doc_id, source, text)`` of every rank, in global order: each rank's
    file is already in gidx order, so a k-way merge gives the order any task count."""
    streams = [_read_rank(p) for p in sorted(folder.glob("*.jsonl.gz"))]
    return [(d, s, t) for _, d, s, t in heapq.merge(*streams, key=lambda r: r[0])]

"""The engine's input, in process (no datatrove): the sources cut into fixed-size parts,
numbered in global order (the engine hands parts, not documents, to its tasks: rank r
takes parts[r::world]).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nlrepro.data.filter_stream import Part
from nlrepro.data.shards import iter_batches


def write_parts(sources: dict[str, Path], folder: Path, part_docs: int) -> int:
    """Cut the sources (sorted by name, each in its row order) into parquet parts of
    ``part_docs`` rows (doc_id, text, source, gidx: the global index, for audits);
    return the number of documents.
    Reads a record batch at a time: memory bounded by a part."""
    folder.mkdir(parents=True, exist_ok=True)
    buf: list[pa.RecordBatch] = []
    total, part = 0, 0

    def flush(rows: list[pa.RecordBatch]) -> None:
        nonlocal part
        pq.write_table(pa.Table.from_batches(rows), folder / f"{part:05d}.parquet")
        part += 1

    for name in sorted(sources):
        for batch in iter_batches(sources[name], ["doc_id", "text"], part_docs):
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


def part_files(parts_dir: str | Path) -> list[Path]:
    """The input parts, in global order (their names are zero-padded numbers)."""
    return sorted(Path(parts_dir).glob("*.parquet"))


def passes(parts_dir: str | Path, passes_dir: str | Path) -> list[Part]:
    """The pass-1 outputs of every input part, in global order."""
    return [Part(Path(passes_dir) / f.stem) for f in part_files(parts_dir)]

"""The engine's input plan, in process (no datatrove): the sources cut into parts of
whole parquet row groups, numbered in global order (sources sorted by name, row groups
in order). The engine hands parts, not documents, to its tasks (``assign``: balanced by
bytes); a part is read in place from its source file, never copied.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from nlrepro.data.filter_stream import Part
from nlrepro.errors import NLReproError


def plan_parts(sources: dict[str, Path], part_docs: int) -> list[dict]:
    """Parts of at least ``part_docs`` documents (the last of each source may hold fewer)
    made of whole row groups: ``{"source", "path", "row_groups", "docs", "bytes"}``
    (bytes: uncompressed, the work a part costs). Reads only the files' footers."""
    parts = []
    for name in sorted(sources):
        path = Path(sources[name]).resolve()
        try:
            meta = pq.ParquetFile(path, pre_buffer=False).metadata
        except (pa.ArrowException, OSError) as exc:
            raise NLReproError(f"{sources[name]}: corrupt or unreadable parquet "
                               f"({type(exc).__name__})") from None
        groups, docs, size = [], 0, 0
        for i in range(meta.num_row_groups):
            groups.append(i)
            docs += meta.row_group(i).num_rows
            size += meta.row_group(i).total_byte_size
            if docs >= part_docs or i == meta.num_row_groups - 1:
                parts.append({"source": name, "path": str(path), "row_groups": groups,
                              "docs": docs, "bytes": size})
                groups, docs, size = [], 0, 0
    return parts


def assign(plan: list[dict], world: int) -> list[list[int]]:
    """The parts of each of ``world`` tasks: largest first, each to the least loaded task
    (by bytes; ties to the lower rank). Deterministic, and which task runs a part never
    changes its files, so the output does not depend on it."""
    loads, tasks = [0] * world, [[] for _ in range(world)]
    for k in sorted(range(len(plan)), key=lambda k: (-plan[k]["bytes"], k)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        tasks[rank].append(k)
        loads[rank] += plan[k]["bytes"]
    return [sorted(t) for t in tasks]


def load_plan(plan_file: str | Path) -> list[dict]:
    return json.loads(Path(plan_file).read_text())


def read_part(part: dict, batch_size: int = 1024) -> Iterator[tuple[str, str, str]]:
    """The ``(doc_id, source, text)`` of a part, in order, a record batch at a time."""
    pf = pq.ParquetFile(part["path"], pre_buffer=False)
    for batch in pf.iter_batches(batch_size=batch_size, row_groups=part["row_groups"],
                                 columns=["doc_id", "text"]):
        yield from zip(batch.column(0).to_pylist(), [part["source"]] * batch.num_rows,
                       batch.column(1).to_pylist())


def passes(plan_file: str | Path, passes_dir: str | Path) -> list[Part]:
    """The pass-1 outputs of every part of the plan, in global order."""
    return [Part(Path(passes_dir) / f"{k:05d}") for k in range(len(load_plan(plan_file)))]

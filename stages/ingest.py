"""Stage ingest (one per source): raw documents -> data/raw/<source>.parquet.

Bounded memory: documents are taken from ``iter_source`` as they come and written in
record batches of at most ``BATCH_DOCS`` documents or ``BATCH_CHARS`` characters (one
parquet row group each); only the doc ids stay in memory, to refuse duplicates.

An ``hf`` source resumes after a crash: every ``CHECKPOINT_BATCHES`` batches the part
being written is closed and the reader's position saved beside it
(``data/raw/.<source>.ingest.tmp/``); a rerun with the same source params reads on from
there, and the parts are joined row group by row group into the same bytes an unbroken
read writes."""
import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from nlrepro.config import load_params
from nlrepro.data.config import HFSource
from nlrepro.data.sources import HFReader, iter_source
from nlrepro.errors import NLReproError, cli_main
from nlrepro.io import atomic_path

BATCH_DOCS, BATCH_CHARS = 256, 8 << 20
CHECKPOINT_BATCHES = 64  # an hf read saves its position every 16,384 documents at most
SCHEMA = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string())])
RAW = Path("data/raw")


@cli_main
def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise NLReproError("usage: python -m stages.ingest <source name>")
    name = argv[0]
    params = load_params()
    if name not in params.data.sources:
        raise NLReproError(f"data.sources.{name}: no such source in params.yaml")
    src = params.data.sources[name]
    if isinstance(src, HFSource):
        n_docs, chars = ingest_resumable(name, src, RAW / f"{name}.parquet")
    else:
        docs = iter_source(name, src, params.seed)
        n_docs, chars = write_batches(RAW / f"{name}.parquet", batches(name, docs))
    print(f"ingest {name}: {n_docs:,} documents, {chars:,} characters")


def batches(name: str, docs: Iterator[tuple[str, str]],
            seen: set[str] | None = None) -> Iterator[pa.Table]:
    """Tables of ``(doc_id, source, text)`` in source order; a duplicate doc_id or an empty
    source is one clear error (``seen``: ids already written by a resumed read)."""
    seen = set() if seen is None else seen
    ids: list[str] = []
    texts: list[str] = []
    size = 0
    for doc_id, text in docs:
        if doc_id in seen:
            raise NLReproError(f"source '{name}': duplicate doc_id values")
        seen.add(doc_id)
        ids.append(doc_id)
        texts.append(text)
        size += len(text)
        if len(ids) >= BATCH_DOCS or size >= BATCH_CHARS:
            yield pa.table({"doc_id": ids, "source": [name] * len(ids), "text": texts},
                           schema=SCHEMA)
            ids, texts, size = [], [], 0
    if ids:
        yield pa.table({"doc_id": ids, "source": [name] * len(ids), "text": texts}, schema=SCHEMA)
    elif not seen:
        raise NLReproError(f"source '{name}': produced no documents")


def write_batches(path: Path, tables: Iterator[pa.Table]) -> tuple[int, int]:
    """Write each table as a row group of one parquet file (the settings of
    ``io.write_table``, so a source that fits one batch gives the same bytes); return the
    documents and characters written."""
    n_docs = chars = 0
    with atomic_path(path) as tmp:
        writer = None
        try:
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, SCHEMA, compression="zstd",
                                              use_dictionary=False, write_statistics=False,
                                              store_schema=True)
                writer.write_table(table)
                n_docs += table.num_rows
                chars += sum(len(t) for t in table.column("text").to_pylist())
        finally:
            if writer is not None:
                writer.close()
    return n_docs, chars


if __name__ == "__main__":
    main(sys.argv[1:])


def ingest_resumable(name: str, src: HFSource, out: Path) -> tuple[int, int]:
    """``write_batches`` of an hf source in checkpointed parts (module docstring)."""
    progress = out.parent / f".{out.stem}.ingest.tmp"
    key = hashlib.sha256(json.dumps(asdict(src), sort_keys=True).encode()).hexdigest()
    state_file = progress / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    if state is None or state.get("key") != key:
        shutil.rmtree(progress, ignore_errors=True)  # another read: start over
        state = {"key": key, "parts": 0, "reader": None}
    progress.mkdir(parents=True, exist_ok=True)
    parts = [progress / f"part-{k:05d}.parquet" for k in range(state["parts"])]
    seen: set[str] = set()
    for part in parts:
        seen.update(pq.read_table(part, columns=["doc_id"]).column(0).to_pylist())
    if parts:
        print(f"ingest {name}: resuming after {len(seen):,} documents", file=sys.stderr)
    reader = HFReader(src, name, state["reader"])
    tables = batches(name, reader, seen)
    while True:
        chunk = _take(tables, CHECKPOINT_BATCHES)
        if not chunk:
            break
        part = progress / f"part-{state['parts']:05d}.parquet"
        tmp = part.with_name(f".{part.name}.{os.getpid()}.tmp")
        write_batches(tmp, iter(chunk))
        tmp.replace(part)
        state = {"key": key, "parts": state["parts"] + 1, "reader": reader.state_dict()}
        state_tmp = progress / f".state.{os.getpid()}.tmp"
        state_tmp.write_text(json.dumps(state))
        state_tmp.replace(state_file)
        parts.append(part)
    n_docs, chars = write_batches(out, _row_groups(parts))
    shutil.rmtree(progress)
    return n_docs, chars


def _take(tables: Iterator[pa.Table], n: int) -> list[pa.Table]:
    out = []
    for table in tables:
        out.append(table)
        if len(out) == n:
            break
    return out


def _row_groups(paths: list[Path]) -> Iterator[pa.Table]:
    """Every row group of the files, in order, one table each (so the joined file has the
    row groups an unbroken write would have had)."""
    for path in paths:
        pf = pq.ParquetFile(path, pre_buffer=False)
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i)

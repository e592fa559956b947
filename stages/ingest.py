"""Stage ingest (one per source): raw documents -> data/raw/<source>.parquet.

Bounded memory: documents are taken from ``iter_source`` as they come and written in
record batches of at most ``BATCH_DOCS`` documents or ``BATCH_CHARS`` characters (one
parquet row group each); only the doc ids stay in memory, to refuse duplicates."""
import sys
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from nlrepro.config import load_params
from nlrepro.data.sources import iter_source
from nlrepro.errors import NLReproError, cli_main
from nlrepro.io import atomic_path

BATCH_DOCS, BATCH_CHARS = 256, 8 << 20
SCHEMA = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string())])


@cli_main
def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise NLReproError("usage: python -m stages.ingest <source name>")
    name = argv[0]
    params = load_params()
    if name not in params.data.sources:
        raise NLReproError(f"data.sources.{name}: no such source in params.yaml")
    docs = iter_source(name, params.data.sources[name], params.seed)
    n_docs, chars = write_batches(Path("data/raw") / f"{name}.parquet", batches(name, docs))
    print(f"ingest {name}: {n_docs:,} documents, {chars:,} characters")


def batches(name: str, docs: Iterator[tuple[str, str]]) -> Iterator[pa.Table]:
    """Tables of ``(doc_id, source, text)`` in source order; a duplicate doc_id or an empty
    source is one clear error."""
    seen: set[str] = set()
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

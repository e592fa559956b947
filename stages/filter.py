"""Stage filter: data/raw/*.parquet -> data/filtered/{docs.parquet, stats.json}."""
from pathlib import Path

import pyarrow as pa

from nlrepro.config import load_params
from nlrepro.data.filters import filter_documents
from nlrepro.errors import NLReproError, cli_main
from nlrepro.io import atomic_dir, read_table, write_json, write_table
from nlrepro.progress import Progress

# Documents per parquet row group of docs.parquet: stage shard reads it a row group at a
# time, so this bounds shard's memory (filter itself holds the corpus, for dedup).
ROW_GROUP_DOCS = 256


@cli_main
def main() -> None:
    params = load_params()
    docs = []
    for name in sorted(params.data.sources):
        table = read_table(Path("data/raw") / f"{name}.parquet", ["doc_id", "text"])
        docs.extend((d, name, t) for d, t in zip(table.column("doc_id").to_pylist(),
                                                 table.column("text").to_pylist()))
    progress = Progress("filter", total=len(docs), unit="docs")
    kept, stats = filter_documents(docs, params.data.filter, progress.update)
    seconds = progress.close()
    if not kept:
        drops = ", ".join(f"{r}={v['docs']}" for r, v in stats.rules.items() if v["docs"])
        raise NLReproError(f"filter: empty corpus after filtering (all {len(docs)} documents "
                           f"dropped: {drops})")
    with atomic_dir("data/filtered") as out:
        write_table(out / "docs.parquet", pa.table({
            "doc_id": [d for d, _, _ in kept],
            "source": [s for _, s, _ in kept],
            "text": [t for _, _, t in kept],
        }), row_group_size=ROW_GROUP_DOCS)
        write_json(out / "stats.json", {"sources": stats.sources, "rules": stats.rules})
    print(f"filter: kept {len(kept):,} of {len(docs):,} documents "
          f"({len(docs) / max(seconds, 1e-9):,.0f} docs/s)")


if __name__ == "__main__":
    main()

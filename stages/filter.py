"""Stage filter: data/raw/*.parquet -> data/filtered/{docs.parquet, stats.json}."""
import time
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
RAW = Path("data/raw")
# The engine's scratch dir: ignored by git (.*.tmp) and not swept by atomic_dir (no pid).
ENGINE_SCRATCH = Path("data/.filtered.engine.tmp")


@cli_main
def main() -> None:
    params = load_params()
    cfg = params.data.filter
    if cfg.uses_engine:
        kept, stats, seconds = run_engine(params.data.sources, cfg)
    else:
        kept, stats, seconds = run_in_process(params.data.sources, cfg)
    n_in = sum(s["docs_in"] for s in stats.sources.values())
    if not kept:
        drops = ", ".join(f"{r}={v['docs']}" for r, v in stats.rules.items() if v["docs"])
        raise NLReproError(f"filter: empty corpus after filtering (all {n_in} documents "
                           f"dropped: {drops})")
    with atomic_dir("data/filtered") as out:
        write_table(out / "docs.parquet", pa.table({
            "doc_id": [d for d, _, _ in kept],
            "source": [s for _, s, _ in kept],
            "text": [t for _, _, t in kept],
        }), row_group_size=ROW_GROUP_DOCS)
        write_json(out / "stats.json", {"sources": stats.sources, "rules": stats.rules})
    print(f"filter: kept {len(kept):,} of {n_in:,} documents "
          f"({n_in / max(seconds, 1e-9):,.0f} docs/s)")


def run_in_process(sources, cfg):
    """filter_documents over every source (sorted by name), in this process."""
    docs = []
    for name in sorted(sources):
        table = read_table(RAW / f"{name}.parquet", ["doc_id", "text"])
        docs.extend((d, name, t) for d, t in zip(table.column("doc_id").to_pylist(),
                                                 table.column("text").to_pylist()))
    progress = Progress("filter", total=len(docs), unit="docs")
    kept, stats = filter_documents(docs, cfg, progress.update)
    return kept, stats, progress.close()


def run_engine(sources, cfg):
    """The same on datatrove with cfg.workers tasks (nlrepro.data.engine). Its scratch
    dir is git-ignored (.*.tmp), kept after a crash so that a rerun resumes, and removed
    on success."""
    from nlrepro.data.engine import filter_files

    paths = {name: RAW / f"{name}.parquet" for name in sources}
    for path in paths.values():
        if not path.exists():
            raise NLReproError(f"{path}: file not found")
    start = time.perf_counter()
    kept, stats = filter_files(paths, cfg, ENGINE_SCRATCH, cwd=Path.cwd())
    return kept, stats, time.perf_counter() - start


if __name__ == "__main__":
    main()

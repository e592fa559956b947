"""Stage filter: data/raw/*.parquet -> data/filtered/{docs.parquet, stats.json}."""
import shutil
import time
from pathlib import Path
from typing import Iterator

from nlrepro.config import load_params
from nlrepro.data.filter_stream import filter_to_parquet
from nlrepro.data.shards import iter_batches
from nlrepro.errors import NLReproError, cli_main
from nlrepro.io import atomic_dir, write_json
from nlrepro.progress import Progress

# Documents per parquet row group of docs.parquet: stage shard reads it a row group at a
# time, so this bounds shard's memory.
ROW_GROUP_DOCS = 256
# Documents read from a source at a time (the in-process filter streams them).
READ_BATCH = 256
RAW = Path("data/raw")
# The engine's scratch dir: ignored by git (.*.tmp) and not swept by atomic_dir (no pid).
ENGINE_SCRATCH = Path("data/.filtered.engine.tmp")


@cli_main
def main() -> None:
    params = load_params()
    cfg = params.data.filter
    with atomic_dir("data/filtered") as out:
        run = run_engine if cfg.uses_engine else run_in_process
        kept, stats, seconds = run(params.data.sources, cfg, out / "docs.parquet")
        n_in = sum(s["docs_in"] for s in stats.sources.values())
        if not kept:
            drops = ", ".join(f"{r}={v['docs']}" for r, v in stats.rules.items() if v["docs"])
            raise NLReproError(f"filter: empty corpus after filtering (all {n_in} documents "
                               f"dropped: {drops})")
        write_json(out / "stats.json", {"sources": stats.sources, "rules": stats.rules})
    print(f"filter: kept {kept:,} of {n_in:,} documents "
          f"({n_in / max(seconds, 1e-9):,.0f} docs/s)")


def read_sources(sources) -> tuple[int, Iterator[tuple[str, str, str]]]:
    """(document count, an iterator of (doc_id, source, text)) over every source (sorted
    by name, each in ingest order), read a record batch at a time."""
    paths = {name: RAW / f"{name}.parquet" for name in sorted(sources)}
    total = 0
    for path in paths.values():  # fail before any work on a missing or broken source
        total += sum(b.num_rows for b in iter_batches(path, ["doc_id"], 65536))

    def docs():
        for name, path in paths.items():
            for batch in iter_batches(path, ["doc_id", "text"], READ_BATCH):
                yield from ((d, name, t) for d, t in zip(batch.column(0).to_pylist(),
                                                         batch.column(1).to_pylist()))
    return total, docs()


def run_in_process(sources, cfg, out: Path):
    """The filter in this process, streaming (nlrepro.data.filter_stream); its scratch
    files live beside the output and are removed before it is published."""
    total, docs = read_sources(sources)
    progress = Progress("filter", total=total, unit="docs")
    scratch = out.parent / ".scratch"
    try:
        kept, stats = filter_to_parquet(docs, cfg, out, scratch, ROW_GROUP_DOCS,
                                        progress.update)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return kept, stats, progress.close()


def run_engine(sources, cfg, out: Path):
    """The same on datatrove with cfg.workers tasks (nlrepro.data.engine). Its scratch
    dir is git-ignored (.*.tmp), kept after a crash so that a rerun resumes, and removed
    on success."""
    from nlrepro.data.engine import filter_files

    paths = {name: RAW / f"{name}.parquet" for name in sources}
    for path in paths.values():
        if not path.exists():
            raise NLReproError(f"{path}: file not found")
    start = time.perf_counter()
    kept, stats = filter_files(paths, cfg, ENGINE_SCRATCH, out, ROW_GROUP_DOCS,
                               cwd=Path.cwd())
    return kept, stats, time.perf_counter() - start


if __name__ == "__main__":
    main()

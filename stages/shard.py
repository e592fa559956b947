"""Stage shard: data/filtered/docs.parquet -> data/shards/<split>/shard-*.parquet + manifest.

Bounded memory: the split is decided from the doc_id and source columns, then documents are
read in record batches and written a shard at a time (``shards.stream_shards``)."""
from pathlib import Path

from nlrepro.config import load_params
from nlrepro.data.shards import stream_shards
from nlrepro.errors import cli_main
from nlrepro.io import atomic_dir, write_json


@cli_main
def main() -> None:
    params = load_params()
    with atomic_dir("data/shards") as out:
        manifest = stream_shards(Path("data/filtered/docs.parquet"), out, params.data.split,
                                 params.data.shard.docs_per_shard, params.seed)
        write_json(out / "manifest.json", manifest)
    counts = ", ".join(f"{s} {v['docs']:,}" for s, v in manifest["splits"].items())
    print(f"shard: {counts} documents")


if __name__ == "__main__":
    main()

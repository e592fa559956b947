"""Stage shard: data/filtered/docs.parquet -> data/shards/<split>/shard-*.parquet + manifest."""
from pathlib import Path

from nlrepro.config import load_params
from nlrepro.data.shards import write_shards
from nlrepro.errors import cli_main
from nlrepro.io import atomic_dir, read_table, write_json


@cli_main
def main() -> None:
    params = load_params()
    table = read_table(Path("data/filtered/docs.parquet"), ["doc_id", "source", "text"])
    with atomic_dir("data/shards") as out:
        manifest = write_shards(table, out, params.data.split,
                                params.data.shard.docs_per_shard, params.seed)
        write_json(out / "manifest.json", manifest)
    counts = ", ".join(f"{s} {v['docs']:,}" for s, v in manifest["splits"].items())
    print(f"shard: {counts} documents")


if __name__ == "__main__":
    main()

"""Stage ingest (one per source): raw documents -> data/raw/<source>.parquet."""
import sys
from pathlib import Path

from nlrepro.config import load_params
from nlrepro.data.sources import ingest_table
from nlrepro.errors import NLReproError, cli_main
from nlrepro.io import write_table


@cli_main
def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise NLReproError("usage: python -m stages.ingest <source name>")
    name = argv[0]
    params = load_params()
    if name not in params.data.sources:
        raise NLReproError(f"data.sources.{name}: no such source in params.yaml")
    table = ingest_table(name, params.data.sources[name], params.seed)
    write_table(Path("data/raw") / f"{name}.parquet", table)
    chars = sum(len(t) for t in table.column("text").to_pylist())
    print(f"ingest {name}: {table.num_rows:,} documents, {chars:,} characters")


if __name__ == "__main__":
    main(sys.argv[1:])

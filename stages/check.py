"""Stage check: the whole params.yaml validated, and the files it names hashed.

`python -m stages.check` (also by hand) loads params.yaml with every check: unknown keys
anywhere in the file (with the closest known key suggested), types, ranges, finite
floats and the cross-section limits. Then it writes data/inputs/ (nlrepro.inputs): one
manifest of the files each data source reads and one of the evaluation task files. dvc.yaml
marks the stage `always_changed`, so it runs first on every `dvc repro` (a second or so)
and a bad value or a changed input file is caught before any stage does work.
"""
from __future__ import annotations

import sys
from pathlib import Path

from nlrepro.config import load_params
from nlrepro.errors import cli_main
from nlrepro.inputs import source_manifest, tasks_manifest
from nlrepro.io import atomic_dir, write_json

OUT = Path("data/inputs")


@cli_main
def main(argv: list[str]) -> None:
    params = load_params()
    manifests = {f"source-{name}.json": source_manifest(src)
                 for name, src in params.data.sources.items()}
    manifests["eval_tasks.json"] = tasks_manifest(dict(params.eval.tasks))
    with atomic_dir(OUT) as tmp:
        for name, manifest in manifests.items():
            write_json(tmp / name, manifest)
    files = sum(len(m.get("files", [])) for m in manifests.values()) + sum(
        1 for t in manifests["eval_tasks.json"].values() if "sha256" in t)
    print(f"check: params.yaml valid; {files} input file(s) named by it hashed into {OUT}/")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The files params.yaml names, hashed, so that DVC reruns what reads them when they change.

A `local` corpus source names files by glob and an `eval.tasks` entry names a task file;
neither path is in dvc.yaml, so editing such a file would leave every stage "up to date".
The `check` stage (run on every `dvc repro`) writes one manifest per consumer,
``data/inputs/source-<name>.json`` and ``data/inputs/eval_tasks.json``, holding each
file's path, size and SHA-256; ``ingest@<name>`` and ``evaluate`` depend on their manifest,
so a changed file changes the manifest and reruns exactly the stages that read it, while an
unchanged one leaves the manifest byte-identical and nothing reruns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nlrepro.data.sources import resolve_paths
from nlrepro.errors import NLReproError
from nlrepro.io import sha256_file


def file_record(path: Path) -> dict[str, Any]:
    """Path, size and SHA-256 of one file (read in pieces: bounded memory)."""
    try:
        sha = sha256_file(path)
    except OSError as exc:
        raise NLReproError(f"{path}: cannot read ({exc.strerror})") from None
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha}


def source_manifest(source: Any) -> dict[str, Any]:
    """The files a data source reads: a local source's globs expanded, an `hf` source's
    local directory when its path is one (a hub id has no local file)."""
    kind = source.type
    files: list[Path] = []
    if kind == "local":
        files = resolve_paths(source.paths)
    elif kind == "hf" and Path(source.path).exists():
        root = Path(source.path)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {"type": kind, "files": [file_record(p) for p in files]}


def tasks_manifest(tasks: dict[str, str | None]) -> dict[str, Any]:
    """Every `eval.tasks` entry: its file's record, or ``{"hub": true}``."""
    out: dict[str, Any] = {}
    for name, path in sorted(tasks.items()):
        if path is None:
            out[name] = {"hub": True}
            continue
        file = Path(path)
        if not file.is_file():
            raise NLReproError(f"eval.tasks.{name}: file not found: {path}")
        out[name] = file_record(file)
    return out

"""Shard: split filtered documents by document into train/val/test and write fixed-size
parquet shards plus a manifest.

The split is decided per source by ranking documents on SHA-256 of ``seed:doc_id``:
exact, stable under adding other sources, and a document lands in exactly one split.
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from nlrepro.data.config import SplitConfig
from nlrepro.errors import NLReproError
from nlrepro.io import read_table, write_table

SPLITS = ("train", "val", "test")
COLUMNS = ["doc_id", "source", "text"]


def stable_rank(seed: int, doc_id: str) -> str:
    return hashlib.sha256(f"{seed}:{doc_id}".encode("utf-8")).hexdigest()


def assign_splits(doc_ids: list[str], sources: list[str], cfg: SplitConfig, seed: int
                  ) -> list[str]:
    """Split name per document; per source ``ceil(n * frac)`` go to val, then test."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, source in enumerate(sources):
        by_source[source].append(i)
    split = ["train"] * len(doc_ids)
    for idx in by_source.values():
        ranked = sorted(idx, key=lambda i: stable_rank(seed, doc_ids[i]))
        n_val = math.ceil(len(ranked) * cfg.val_frac)
        n_test = math.ceil(len(ranked) * cfg.test_frac)
        for i in ranked[:n_val]:
            split[i] = "val"
        for i in ranked[n_val:n_val + n_test]:
            split[i] = "test"
    return split


def write_shards(table: pa.Table, out_dir: Path, cfg: SplitConfig, docs_per_shard: int,
                 seed: int) -> dict:
    """Write ``out_dir/<split>/shard-NNNNN.parquet``; return the manifest."""
    doc_ids = table.column("doc_id").to_pylist()
    sources = table.column("source").to_pylist()
    splits = assign_splits(doc_ids, sources, cfg, seed)
    manifest: dict = {"docs_per_shard": docs_per_shard, "splits": {}}
    for name in SPLITS:
        rows = [i for i, s in enumerate(splits) if s == name]
        sub = table.take(pa.array(rows, type=pa.int64()))
        if name == "train" and sub.num_rows == 0:
            raise NLReproError("shard: the train split is empty (too few documents)")
        shards = []
        for k, start in enumerate(range(0, sub.num_rows, docs_per_shard)):
            part = sub.slice(start, docs_per_shard)
            path = out_dir / name / f"shard-{k:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_table(path, part)
            shards.append({
                "file": f"{name}/{path.name}",
                "docs": part.num_rows,
                "chars": sum(len(t) for t in part.column("text").to_pylist()),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            })
        per_source: dict[str, int] = defaultdict(int)
        for s in sub.column("source").to_pylist():
            per_source[s] += 1
        manifest["splits"][name] = {"docs": sub.num_rows, "docs_per_source": dict(per_source),
                                    "shards": shards}
    return manifest


def read_split(shard_dir: Path, manifest: dict, split: str) -> pa.Table:
    """All documents of one split, in shard order; corrupt shards are clear errors."""
    entries = manifest["splits"].get(split, {}).get("shards", [])
    tables = [read_table(shard_dir / e["file"], COLUMNS) for e in entries]
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in COLUMNS})
    return pa.concat_tables(tables)

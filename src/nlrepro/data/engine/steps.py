"""nlrepro's filter passes as datatrove pipeline steps.

The input parts (``parts.py``) are numbered in global order. Step ``FilterParts`` runs
pass 1 (``filter_stream.Part.first_pass``) on the parts of its rank (``parts[rank::N]``)
and names its files after the part, not the rank, so they are the same whichever task
made them; ``Decide`` (one task) runs pass 2 on all parts in order. The stage process
then runs pass 3 (``Parts.write_kept``). This module imports datatrove: import it only
when the engine runs.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep

from nlrepro.data.config import FilterConfig
from nlrepro.data.engine.parts import part_files, passes
from nlrepro.data.filter_stream import Part, Parts
from nlrepro.data.shards import iter_batches

SUFFIXES = (".passed.parquet", ".digests", ".sig", ".stats.json")


class FilterParts(PipelineStep):
    """Pass 1 (normalize, quality rules, digests, signatures) on this rank's parts. A part
    whose files are all there is skipped (a rerun of a task that died half-way)."""
    name = "nlrepro filter (pass 1)"

    def __init__(self, parts_dir: str, passes_dir: str, cfg: FilterConfig):
        super().__init__()
        self.parts_dir, self.passes_dir, self.cfg = parts_dir, passes_dir, cfg

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        Path(self.passes_dir).mkdir(parents=True, exist_ok=True)
        for path in part_files(self.parts_dir)[rank::world_size]:
            part = Part(Path(self.passes_dir) / path.stem)
            if all(part.file(s).exists() for s in SUFFIXES):
                continue
            stats = part.first_pass(_documents(path), self.cfg)
            self.stat_update("documents", value=sum(s["docs_in"]
                                                    for s in stats.sources.values()))


def _documents(path: Path):
    for batch in iter_batches(path, ["doc_id", "source", "text"], 1024):
        yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(),
                       batch.column(2).to_pylist())


class Decide(PipelineStep):
    """One task: pass 2 (exact and near dedup in global order) over every part; writes
    the decision of each passed document (``decisions.npy``, int8)."""
    name = "nlrepro dedup decisions (pass 2)"

    def __init__(self, parts_dir: str, passes_dir: str, out: str, cfg: FilterConfig):
        super().__init__()
        self.parts_dir, self.passes_dir, self.out, self.cfg = parts_dir, passes_dir, out, cfg

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        rule = Parts(passes(self.parts_dir, self.passes_dir), self.cfg.num_perm).decide(self.cfg)
        tmp = f"{self.out}.{os.getpid()}.tmp.npy"
        np.save(tmp, rule)
        os.replace(tmp, self.out)

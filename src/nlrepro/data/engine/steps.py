"""nlrepro's filter passes as datatrove pipeline steps.

The parts of the plan (``parts.py``) are numbered in global order. Step ``FilterParts``
runs pass 1 (``filter_stream.Part.first_pass``) on the parts of its rank
(``parts.assign``) and names its files after the part, not the rank, so they are the
same whichever task made them; ``Decide`` (one task) runs pass 2 on all parts in order.
The stage process then runs pass 3 (``Parts.write_kept``). This module imports datatrove: import it only
when the engine runs.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep

from nlrepro.data.config import FilterConfig
from nlrepro.data.engine.parts import assign, load_plan, passes, read_part
from nlrepro.data.filter_stream import Part, Parts

SUFFIXES = (".passed.parquet", ".digests", ".sig", ".stats.json")


class FilterParts(PipelineStep):
    """Pass 1 (normalize, quality rules, digests, signatures) on this rank's parts. A part
    whose files are all there is skipped (a rerun of a task that died half-way)."""
    name = "nlrepro filter (pass 1)"

    def __init__(self, plan_file: str, passes_dir: str, cfg: FilterConfig):
        super().__init__()
        self.plan_file, self.passes_dir, self.cfg = plan_file, passes_dir, cfg

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        Path(self.passes_dir).mkdir(parents=True, exist_ok=True)
        plan = load_plan(self.plan_file)
        for k in assign(plan, world_size)[rank]:
            part = Part(Path(self.passes_dir) / f"{k:05d}")
            if all(part.file(s).exists() for s in SUFFIXES):
                continue
            part.first_pass(read_part(plan[k]), self.cfg)
            self.stat_update("documents", value=plan[k]["docs"])


class Decide(PipelineStep):
    """One task: pass 2 (exact and near dedup in global order) over every part; writes
    the decision of each passed document (``decisions.npy``, int8)."""
    name = "nlrepro dedup decisions (pass 2)"

    def __init__(self, plan_file: str, passes_dir: str, out: str, cfg: FilterConfig):
        super().__init__()
        self.plan_file, self.passes_dir, self.out, self.cfg = plan_file, passes_dir, out, cfg

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        rule = Parts(passes(self.plan_file, self.passes_dir), self.cfg.num_perm).decide(self.cfg)
        tmp = f"{self.out}.{os.getpid()}.tmp.npy"
        np.save(tmp, rule)
        os.replace(tmp, self.out)

"""The filter stage on datatrove (``data.filter.workers > 1`` or ``executor: slurm``):
the same documents and counts as the in-process filter, byte for byte, for any number of
workers, on one machine (LocalPipelineExecutor) or a Slurm cluster.

Steps (docs/DATA.md, "The engine: datatrove"):
  0. in process: the sources planned as numbered parts of whole row groups, at least
     ``part_docs`` rows each, read in place (parts.py);
  1. tasks=N: pass 1 of the filter (normalize, quality rules, digests, MinHash) on each
     task's parts, one set of files per part (steps.FilterParts);
  2. tasks=1: pass 2, the exact and near dedup decisions in global order (steps.Decide);
  3. in process: pass 3, the kept documents of the parts, in order, into the output.

datatrove is imported here only, when the engine runs: the project works without it.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from nlrepro.data.config import FilterConfig
from nlrepro.data.engine.parts import passes, plan_parts
from nlrepro.data.filter_stream import Parts, merge_stats
from nlrepro.data.filters import FilterStats
from nlrepro.errors import NLReproError
from nlrepro.io import sha256_file

# The steps' names: their log folders under the scratch dir and their Slurm job names.
STAGES = ("1_filter", "2_decide")


def run_key(sources: dict[str, Path], cfg: FilterConfig) -> str:
    """What a scratch dir was made from: inputs (SHA-256), rules and task count. A rerun
    with the same key resumes (datatrove skips completed tasks); any other starts over."""
    ident = {"sources": {n: sha256_file(p) for n, p in sorted(sources.items())},
             "cfg": asdict(cfg)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def prepare_scratch(scratch: Path, key: str) -> None:
    """Keep a scratch dir of the same run (resume), else start from an empty one."""
    stamp = scratch / "key.txt"
    if scratch.exists() and (not stamp.exists() or stamp.read_text() != key):
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)


def build_executors(cfg: FilterConfig, scratch: Path, cwd: Path | None = None) -> list:
    """The datatrove executors, in order (Slurm ones depend on the one before)."""
    from nlrepro.data.engine import steps

    plan, passes_dir = str(scratch / "parts.json"), str(scratch / "passes")
    pipelines = {
        "1_filter": ([steps.FilterParts(plan, passes_dir, cfg)], cfg.workers),
        "2_decide": ([steps.Decide(plan, passes_dir, str(scratch / "decisions.npy"), cfg)], 1),
    }
    executors = []
    for name in STAGES:
        pipeline, tasks = pipelines[name]
        executors.append(_executor(cfg, pipeline, tasks, scratch / "logs" / name, name,
                                   executors[-1] if executors else None, cwd))
    return executors


def _executor(cfg: FilterConfig, pipeline: list, tasks: int, logs: Path, name: str,
              depends, cwd: Path | None):
    if cfg.executor == "local":
        from datatrove.executor import LocalPipelineExecutor
        return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks,
                                     workers=min(tasks, cfg.workers), logging_dir=str(logs))
    from datatrove.executor import SlurmPipelineExecutor
    s = cfg.slurm
    # the nodes need our package: the venv, then PYTHONPATH to src/ (as dvc.yaml sets it)
    env = [f"source {Path(s.venv).resolve() / 'bin' / 'activate'}"] if s.venv else []
    if cwd is not None:
        env += [f"cd {cwd}", f"export PYTHONPATH={cwd / 'src'}:$PYTHONPATH"]
    return SlurmPipelineExecutor(
        pipeline=pipeline, tasks=tasks, time=s.time, partition=s.partition,
        cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb,
        job_name=f"nlrepro_filter_{name}", logging_dir=str(logs),
        slurm_logs_folder=str(logs / "slurm"), env_command=" && ".join(env) or None,
        depends=depends, requeue_signals=None, mail_type="NONE")


def wait_for_slurm(executors: list, poll_s: float = 30.0) -> None:
    """Block until the last stage's tasks are all complete (dvc repro waits for the
    cluster, then merges); fail when its jobs have left the queue without completing."""
    last = executors[-1]
    while last.get_incomplete_ranks():
        ids = [str(e.job_id) for e in executors if e.job_id not in (None, -1)]
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(ids)], capture_output=True,
                                text=True).stdout.strip() if ids else ""
        if not queued and last.get_incomplete_ranks():
            raise NLReproError(f"filter engine: Slurm jobs {','.join(ids)} ended with "
                               f"incomplete tasks; see {last.logging_dir.path}")
        time.sleep(poll_s)


def write_output(scratch: Path, cfg: FilterConfig, out: Path,
                 row_group: int) -> tuple[int, FilterStats]:
    """Pass 3: the kept documents of every part, in order, into ``out``; the counts."""
    parts = passes(scratch / "parts.json", scratch / "passes")
    stats = merge_stats(parts)
    rule = np.load(scratch / "decisions.npy")
    kept = Parts(parts, cfg.num_perm).write_kept(rule, out, row_group, stats)
    return kept, stats


def filter_files(sources: dict[str, Path], cfg: FilterConfig, scratch: Path, out: Path,
                 row_group: int, cwd: Path | None = None,
                 timings: dict | None = None) -> tuple[int, FilterStats]:
    """``filter_documents`` over the parquet files ``sources`` (name -> path), run by
    datatrove, written to the parquet file ``out`` (row groups of ``row_group``
    documents); returns the number of kept documents and the counts. ``scratch`` (removed
    on success) holds its intermediate files and completion markers, so a rerun after a
    crash resumes where it stopped. ``timings`` (optional) receives seconds per step."""
    timings = {} if timings is None else timings
    try:
        import datatrove  # noqa: F401
    except ImportError:
        raise NLReproError("data.filter.workers > 1 or executor: slurm needs datatrove: "
                           "pip install -r requirements-engine.txt") from None
    scratch = scratch.resolve()
    start = time.perf_counter()
    prepare_scratch(scratch, run_key(sources, cfg))
    plan = scratch / "parts.json"
    if not plan.exists():  # written whole (a rename), or kept for the rerun
        tmp = scratch / "parts.json.tmp"
        tmp.write_text(json.dumps(plan_parts(sources, cfg.part_docs)))
        tmp.replace(plan)
    timings["0_plan"] = time.perf_counter() - start
    executors = build_executors(cfg, scratch, cwd)
    if cfg.executor == "slurm":
        executors[-1].run()  # submits the chain: each job depends on the one before
        wait_for_slurm(executors)
    else:
        for name, ex in zip(STAGES, executors):
            start = time.perf_counter()
            ex.run()
            timings[name] = time.perf_counter() - start
    start = time.perf_counter()
    kept, stats = write_output(scratch, cfg, out, row_group)
    timings["3_write"] = time.perf_counter() - start
    shutil.rmtree(scratch)
    return kept, stats

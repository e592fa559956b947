"""The filter stage on datatrove (``data.filter.workers > 1`` or ``executor: slurm``):
the same documents and counts as ``filter_documents``, byte for byte, for any number of
workers, on one machine (LocalPipelineExecutor) or a Slurm cluster.

Stages (docs/DATA.md, "The engine: datatrove"):
  0. in process: the sources cut into parts of ``part_docs`` rows, each row tagged with
     its global index ``gidx`` (parts.py);
  1. tasks=N: normalize + quality rules (a BaseFilter), kept docs per rank, sidecar
     (gidx, raw length, SHA-256) and our MinHash in datatrove's band files;
  2. tasks=bands: datatrove's MinhashDedupBuckets (band collisions across all ranks);
  3. tasks=1: exact and near dedup in gidx order (decide.py) -> datatrove .remove files;
  4. tasks=N: datatrove's MinhashDedupFilter applies them per rank;
  5. in process: k-way merge of the ranks by gidx, counts into FilterStats.

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

from nlrepro.data.config import FilterConfig
from nlrepro.data.engine.parts import merge_ranks, write_parts
from nlrepro.data.filters import RULES, FilterStats
from nlrepro.errors import NLReproError
from nlrepro.io import sha256_file

# The stages' names: their folders under the scratch dir and their Slurm job names.
STAGES = ("1_filter", "2_buckets", "3_decide", "4_apply")


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
    """The four datatrove executors, in order (Slurm ones depend on the one before)."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupFilter
    from datatrove.pipeline.writers import JsonlWriter

    from nlrepro.data.engine import steps

    d = {k: str(scratch / k) for k in ("parts", "stage1", "stats", "sidecar", "bands",
                                       "sigs", "dups", "remove", "final")}
    near = cfg.near_dup_threshold is not None
    rank_file = "${rank}.jsonl.gz"  # ${rank} is zero-padded to 5 digits
    stage1 = [steps.PartReader(d["parts"]), steps.QualityFilter(cfg, d["stats"]),
              steps.Sidecar(d["sidecar"]), JsonlWriter(d["stage1"], output_filename=rank_file)]
    if near:
        stage1.append(steps.Signature(d["bands"], d["sigs"], cfg))
    pipelines = {
        "1_filter": (stage1, cfg.workers),
        "2_buckets": ([MinhashDedupBuckets(d["bands"], d["dups"],
                                           config=steps.minhash_config(cfg))] if near else [],
                      steps.minhash_config(cfg).num_buckets if near else 1),
        "3_decide": ([steps.Decide(d["sidecar"], d["sigs"] if near else None,
                                   d["dups"] if near else None, d["remove"], cfg,
                                   cfg.workers)], 1),
        "4_apply": ([steps.RankFileReader(d["stage1"]), MinhashDedupFilter(d["remove"]),
                     JsonlWriter(d["final"], output_filename=rank_file)], cfg.workers),
    }
    executors = []
    for name in STAGES:
        pipeline, tasks = pipelines[name]
        if not pipeline:
            continue
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


def collect_stats(scratch: Path, kept: list[tuple[str, str, str]]) -> FilterStats:
    """FilterStats from the ranks' counts, the dedup counts and the kept documents."""
    stats = FilterStats()
    for path in sorted((scratch / "stats").glob("*.json")):
        part = json.loads(path.read_text())
        for src, (docs, chars) in part["sources"].items():
            entry = stats.sources.setdefault(src, {"docs_in": 0, "chars_in": 0,
                                                   "docs_out": 0, "chars_out": 0})
            entry["docs_in"] += docs
            entry["chars_in"] += chars
        for rule, (docs, chars) in part["rules"].items():
            stats.rules[rule]["docs"] += docs
            stats.rules[rule]["chars"] += chars
    for rule, v in json.loads((scratch / "remove" / "rules.json").read_text()).items():
        stats.rules[rule]["docs"] += v["docs"]
        stats.rules[rule]["chars"] += v["chars"]
    stats.sources = dict(sorted(stats.sources.items()))
    for _, source, text in kept:
        stats.count_out(source, len(text))
    assert set(stats.rules) == set(RULES)
    return stats


def filter_files(sources: dict[str, Path], cfg: FilterConfig, scratch: Path,
                 cwd: Path | None = None) -> tuple[list[tuple[str, str, str]], FilterStats]:
    """``filter_documents`` over the parquet files ``sources`` (name -> path), run by
    datatrove; ``scratch`` (removed on success) holds its intermediate files and
    completion markers, so a rerun after a crash resumes where it stopped."""
    try:
        import datatrove  # noqa: F401
    except ImportError:
        raise NLReproError("data.filter.workers > 1 or executor: slurm needs datatrove: "
                           "pip install -r requirements-engine.txt") from None
    scratch = scratch.resolve()
    prepare_scratch(scratch, run_key(sources, cfg))
    if not (scratch / "parts.done").exists():  # parts are rewritten whole, or kept
        shutil.rmtree(scratch / "parts", ignore_errors=True)
        write_parts(sources, scratch / "parts", cfg.part_docs)
        (scratch / "parts.done").touch()
    executors = build_executors(cfg, scratch, cwd)
    if cfg.executor == "slurm":
        executors[-1].run()  # submits the chain: each job depends on the one before
        wait_for_slurm(executors)
    else:
        for ex in executors:
            ex.run()
    kept = merge_ranks(scratch / "final")
    stats = collect_stats(scratch, kept)
    shutil.rmtree(scratch)
    return kept, stats

"""The filter on datatrove (nlrepro.data.engine): equal documents and stats for 1, 2 and
3 workers and for the in-process filter_documents; the Slurm job chain built without
submitting; resumable tasks; the stage end to end, byte-identical for 1 and 2 workers
(the cluster recipe of docs/DATA.md, run with the local executor)."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

pytest.importorskip("datatrove", reason="the filter engine's tests need datatrove "
                                        "(pip install -r requirements-engine.txt)")

from conftest import run_stage, smoke_params  # noqa: E402
from nlrepro.configlib import ConfigError, parse  # noqa: E402
from nlrepro.data.config import FilterConfig, SlurmConfig  # noqa: E402
from nlrepro.data.engine import build_executors, filter_files  # noqa: E402
from nlrepro.data.filters import filter_documents  # noqa: E402

CFG = FilterConfig(min_chars=100, shingle_words=3, part_docs=40)
WORDS = ("the of and to in is was it that he she for with as his her on at by time "
         "king lord good night day house love war sea land fire word hand heart").split()


def corpus(seed: int = 0, n: int = 150) -> list[str]:
    """Prose with exact and near duplicates (also across sources), too short and
    non-alphabetic documents, and an empty one."""
    rng = np.random.default_rng(seed)
    docs: list[str] = []
    for i in range(n):
        r = rng.random()
        if r < 0.1 and docs:
            docs.append(docs[int(rng.integers(len(docs)))] + "  \r\n")  # equal once normalised
        elif r < 0.2 and docs:
            words = docs[int(rng.integers(len(docs)))].split()
            words[int(rng.integers(len(words)))] = "zebra"
            docs.append(" ".join(words))
        elif r < 0.25:
            docs.append("Too short.")
        elif r < 0.3:
            docs.append(" | ".join(str(x) for x in rng.integers(0, 999, 60)))
        else:
            docs.append(" ".join(rng.choice(WORDS, int(rng.integers(40, 90)))) + ".")
    docs.append("")
    return docs


def write_sources(root, texts: list[str], names=("alpha", "beta", "gamma")) -> dict:
    """The corpus split over sources as data/raw/<name>.parquet under ``root``."""
    raw = root / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k, name in enumerate(names):
        chunk = texts[k::len(names)]
        pq.write_table(pa.table({"doc_id": [f"{name}/{i}" for i in range(len(chunk))],
                                 "text": chunk}), raw / f"{name}.parquet", row_group_size=8)
        paths[name] = raw / f"{name}.parquet"
    return paths


def in_process(paths: dict, cfg: FilterConfig):
    docs = []
    for name in sorted(paths):
        t = pq.read_table(paths[name])
        docs += [(d, name, x) for d, x in zip(t["doc_id"].to_pylist(), t["text"].to_pylist())]
    return filter_documents(docs, cfg)


def engine(paths: dict, cfg: FilterConfig, scratch):
    """filter_files, and the documents it wrote, as filter_documents returns them."""
    out = scratch.parent / f"{scratch.name}.parquet"
    n, stats = filter_files(paths, cfg, scratch, out, 16)
    t = pq.read_table(out)
    kept = list(zip(t["doc_id"].to_pylist(), t["source"].to_pylist(), t["text"].to_pylist()))
    assert n == len(kept)
    meta = pq.ParquetFile(out).metadata
    assert all(meta.row_group(i).num_rows == 16 for i in range(meta.num_row_groups - 1))
    return kept, stats


def test_one_and_two_workers_equal_the_in_process_filter(tmp_path):
    paths = write_sources(tmp_path, corpus())
    kept0, stats0 = in_process(paths, CFG)
    assert stats0.rules["exact_dup"]["docs"] and stats0.rules["near_dup"]["docs"]
    assert stats0.rules["too_short"]["docs"] and stats0.rules["low_alpha"]["docs"]
    for workers in (1, 2):
        cfg = dataclasses.replace(CFG, workers=workers)
        kept, stats = engine(paths, cfg, tmp_path / f"scratch{workers}")
        assert kept == kept0, workers
        assert stats.sources == stats0.sources and stats.rules == stats0.rules
        assert not (tmp_path / f"scratch{workers}").exists()  # removed on success


def test_near_dedup_off_and_more_workers_than_parts(tmp_path):
    paths = write_sources(tmp_path, corpus(1, 60))
    cfg = dataclasses.replace(CFG, near_dup_threshold=None, part_docs=1000, workers=3)
    kept0, stats0 = in_process(paths, cfg)
    kept, stats = engine(paths, cfg, tmp_path / "scratch")
    assert kept == kept0 and stats.rules == stats0.rules and stats.sources == stats0.sources


def test_a_rerun_skips_completed_tasks(tmp_path, monkeypatch):
    """Completion markers of a crashed run's finished tasks make the rerun skip them."""
    import nlrepro.data.engine as engine_module

    paths = write_sources(tmp_path, corpus())
    cfg = dataclasses.replace(CFG, workers=2)
    scratch = tmp_path / "scratch"
    kept0, _ = in_process(paths, cfg)
    monkeypatch.setattr(engine_module, "write_output", lambda *a: (_ for _ in ()).throw(
        RuntimeError("crash after the executors")))
    with pytest.raises(RuntimeError):
        engine(paths, cfg, scratch)
    done = sorted(p.name for p in (scratch / "logs" / "1_filter" / "completions").iterdir())
    assert done == ["00000", "00001"]
    monkeypatch.undo()
    (scratch / "logs" / "1_filter" / "completions" / "00001").unlink()  # as if it had died
    from datatrove.executor import LocalPipelineExecutor
    to_run = []
    original = LocalPipelineExecutor.get_incomplete_ranks
    monkeypatch.setattr(LocalPipelineExecutor, "get_incomplete_ranks",
                        lambda self, *a, **k: to_run.append(original(self, *a, **k))
                        or to_run[-1])
    kept, _ = engine(paths, cfg, scratch)
    assert kept == kept0
    # step 1 runs only the rank without a marker; step 2 (complete) is not started at all
    assert to_run == [[1]]


def test_slurm_chain_is_built_without_submitting(tmp_path, monkeypatch):
    import datatrove.executor.slurm as slurm

    cfg = dataclasses.replace(CFG, workers=4, executor="slurm",
                              slurm=SlurmConfig(partition="cpu", time="01:00:00",
                                                venv=str(tmp_path / "venv")))
    submitted = []

    def fake_sbatch(script, retriever, *args):
        submitted.append((script, args))
        return str(100 + len(submitted))
    monkeypatch.setattr(slurm, "launch_slurm_job", fake_sbatch)
    executors = build_executors(cfg, tmp_path / "scratch", cwd=tmp_path)
    assert [e.tasks for e in executors] == [4, 1]
    executors[-1].run()
    jobs = [(s, a) for s, a in submitted if "launch_pickled_pipeline" in s]  # not merge_stats
    assert [s.split("--job-name=")[1].split("\n")[0] for s, _ in jobs] == [
        f"nlrepro_filter_{n}" for n in ("1_filter", "2_decide")]
    ids = {s.split("--job-name=")[1].split("\n")[0]: submitted.index((s, a)) + 101
           for s, a in jobs}
    deps = [next((x for x in a if x.startswith("--dependency")), None) for _, a in jobs]
    assert deps[0] is None
    assert deps[1:] == [f"--dependency=afterok:{ids['nlrepro_filter_1_filter']}"]
    script = jobs[0][0]
    assert "#SBATCH --partition=cpu" in script and "#SBATCH --array=0-3" in script
    assert f"source {tmp_path / 'venv' / 'bin' / 'activate'}" in script
    assert f"export PYTHONPATH={tmp_path / 'src'}" in script


def test_bad_engine_params_are_one_clear_error():
    with pytest.raises(ConfigError, match="executor"):
        parse(FilterConfig, {"executor": "ray"}, "data.filter")
    with pytest.raises(ConfigError, match="data.filter.slurm.partition: required"):
        parse(FilterConfig, {"executor": "slurm"}, "data.filter")


@pytest.mark.parametrize("workers", [2])
def test_stage_output_is_byte_identical_for_any_worker_count(tmp_path, workers):
    """The cluster recipe, run locally: same params but the worker count, same bytes."""
    texts = corpus(2, 120)
    outs = {}
    for w in (1, workers):
        root = tmp_path / f"w{w}"
        write_sources(root, texts, names=("alpha", "beta"))
        params = smoke_params()
        params["data"]["sources"] = {"alpha": {"type": "synthetic"}, "beta": {"type": "synthetic"}}
        params["data"]["filter"].update(min_chars=100, shingle_words=3, workers=w, part_docs=30)
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        proc = run_stage(root, "stages.filter")
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[w] = {n: (root / "data" / "filtered" / n).read_bytes()
                   for n in ("docs.parquet", "stats.json")}
        assert sorted(p.name for p in (root / "data").iterdir()) == ["filtered", "raw"]
    assert outs[1] == outs[workers]
    assert json.loads(outs[1]["stats.json"])["rules"]["exact_dup"]["docs"] > 0
    shutil.rmtree(tmp_path)

"""The long-context study's pipeline (studies/long_context): its dvc.yaml is the rendering
of its stage modules' imports, its params are validated by the main schema plus the
study's own checks, the data stage's rows are deterministic and mixed as configured, and
the report renders the table and plot files from evaluation results."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO
from eval_helpers import tiny_tokenizer

sys.path.insert(0, str(REPO))
from studies.long_context import config as C  # noqa: E402
from studies.long_context import data as D  # noqa: E402
from studies.long_context import deps, report  # noqa: E402
from nlrepro.configlib import ConfigError  # noqa: E402
from nlrepro.eval.retrieval import grid_metrics  # noqa: E402


def test_dvc_yaml_is_the_rendering_of_the_stage_imports():
    assert (REPO / "studies/long_context/dvc.yaml").read_text() == deps.render(), \
        "run: PYTHONPATH=src python -m studies.long_context.deps --write"
    spec = yaml.safe_load(deps.render())
    assert set(spec["stages"]) == {"data", "train", "evaluate", "bench", "report"}
    assert "src/nlrepro/data/retrieval.py" in spec["stages"]["data"]["deps"]
    # adding a seed or a variant adds runs and reruns none of the others
    train_params = spec["stages"]["train"]["params"][0]["studies/long_context/params.yaml"]
    assert "train.steps" in train_params and not {"train", "train.seeds", "train.variants"} & \
        set(train_params)
    assert "studies/long_context/train.py" in spec["stages"]["train"]["deps"]
    assert all(s["wdir"] == "../.." for s in spec["stages"].values())


def test_the_committed_params_load_with_one_window_for_every_variant():
    params, study = C.load()
    assert {params.model_for(v).attention for v in params.train.variants} == {"swa"}
    assert C.window(params) == 64
    assert C.distances(params, study) == [32, 64, 128, 256, 512, 1024, 2048, 4096]
    assert study.data.train_rows >= params.train.steps * params.train.batch_size


def _write(tmp_path, edit) -> Path:
    raw = yaml.safe_load(C.PARAMS.read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["model"].update(variants={"transformer": {"attention": "full"}}), "needs swa"),
    (lambda r: r["model"].update(variants={"titan": {"window": 32}}), "same window"),
    (lambda r: r["study"]["data"].update(min_distance=500, max_distance=100), "above max_distance"),
    (lambda r: r["study"]["eval"].update(depths=[1.0]), "study.eval.depths"),
    (lambda r: r["study"]["data"].update(bogus=1), "bogus"),
    (lambda r: r.pop("study"), "'study' section"),
])
def test_bad_study_params_are_one_line_errors(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        C.load(_write(tmp_path, edit))


def test_study_rows_are_deterministic_and_mixed_as_configured():
    tok = tiny_tokenizer()
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    corpus = (np.arange(20_000) % 300 + 1).astype(np.uint16)      # never end-of-text (0)
    cfg = C.StudyData(train_rows=40, row_len=257, retrieval_frac=0.5, min_distance=32,
                      max_distance=200)
    rows, stats = D.build_rows(enc, 0, corpus, cfg, 40, seed=0, split_id=1)
    again, _ = D.build_rows(enc, 0, corpus, cfg, 40, seed=0, split_id=1)
    other, _ = D.build_rows(enc, 0, corpus, cfg, 40, seed=0, split_id=2)
    assert rows.shape == (40, 257) and rows.dtype == np.uint16
    assert np.array_equal(rows, again) and not np.array_equal(rows, other)
    with_docs = int(sum((r == 0).any() for r in rows))      # a retrieval row holds end-of-text
    assert 10 <= with_docs <= 30                            # about half of 40
    assert sum(stats["docs"].values()) >= with_docs
    none, _ = D.build_rows(enc, 0, corpus, C.StudyData(retrieval_frac=0.0, row_len=257), 10, 0, 1)
    assert not (none == 0).any()


def _fake_eval(variant: str, acc_fn) -> dict:
    dists, depths = [32, 64, 256], [0.0, 0.5]
    recs = [{"distance": d, "depth": dp, "correct": i < round(4 * acc_fn(d)), "loglik": -float(d) / 32}
            for d in dists for dp in depths for i in range(4)]
    return {"variant": variant, "window": 64, "distances": dists, "depths": depths, "samples": 4,
            "grid": grid_metrics(recs, 64)}


def test_report_renders_the_table_csvs_and_figures():
    evals = {"transformer": {0: _fake_eval("transformer", lambda d: 1.0 if d <= 64 else 0.0)},
             "titan": {0: _fake_eval("titan", lambda d: 0.5)}}
    md = report.markdown(evals, None, {})
    # one seed: the Wilson interval over the run's 8 probes, and the report says so
    assert "| Transformer++ | 1.00 [0.68, 1.00] | 1.00 [0.68, 1.00] | 0.00 [0.00, 0.32] |" in md
    assert "| TITAN | 0.50 [0.22, 0.78] |" in md
    assert "no interval over seeds exists" in md
    acc, ll, grid = report.plot_rows(evals["titan"])
    assert [r["distance"] for r in acc] == [32, 64, 256] and acc[2]["distance_w"] == 4.0
    assert ll[0]["key_loglik"] == -1.0 and len(grid) == 6
    assert report._csv(acc).splitlines()[0] == "distance,distance_w,acc,lo,hi,seed0"
    figs = report.figures(evals, dpi=40)
    assert set(figs) == {"accuracy.png", "loglik.png", "heatmap_transformer.png", "heatmap_titan.png"}
    assert all(b[:8] == b"\x89PNG\r\n\x1a\n" for b in figs.values())


def test_report_aggregates_seeds_with_a_student_t_interval():
    """Three seeds at 1.0, 0.5, 0.75 (4 probes per cell): mean 0.75, sd 0.25, half-width
    t(0.975, 2) 0.25 / sqrt(3) = 4.3027 x 0.14434 = 0.6211 -> [0.129, 1.0 (clipped)]."""
    evals = {"hope": {s: _fake_eval("hope", lambda d, a=a: a) for s, a in
                      [(0, 1.0), (1, 0.5), (2, 0.75)]}}
    mean, lo, hi = report.acc_interval(evals["hope"], 64)
    assert mean == pytest.approx(0.75) and lo == pytest.approx(0.75 - 0.62113, abs=1e-4)
    assert hi == 1.0
    md = report.markdown(evals, None, {})
    assert "| HOPE | 0.75 [0.13, 1.00] (1.00/0.50/0.75) |" in md
    assert "mean over 3 training seeds [0, 1, 2]" in md
    summary = report.summary(evals)["hope"]
    assert summary["acc_by_distance"]["64"]["seed1"] == 0.5
    assert summary["acc_at_4w"]["ci95_low"] == pytest.approx(0.75 - 0.62113, abs=1e-4)
    acc, _, grid = report.plot_rows(evals["hope"])
    assert [acc[0][f"seed{s}"] for s in range(3)] == [1.0, 0.5, 0.75]
    assert grid[0]["acc"] == pytest.approx(0.75)                # cells averaged over seeds

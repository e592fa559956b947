"""End to end: `dvc repro` in a temporary git clone of the working tree, at smoke size.

Each later stage of the pipeline joins this test, so CI proves the whole pipeline runs
from a clean checkout. Marked e2e; it takes about four minutes on 2 cores.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, smoke_params, stage_env
from nlrepro.train.data import open_rows

pytestmark = pytest.mark.e2e

DATA_STAGES = ["ingest@shakespeare", "ingest@synthetic", "filter", "shard", "tokenizer",
               "tokenize"]
TASK_FILE = "tests/data/tasks/piqa_smoke.jsonl"     # a zero-shot task file params names
VARIANTS = ["hope", "titan", "transformer"]
RUNS = [f"{v}-s0" for v in VARIANTS]            # one (variant, seed) run each, seed 0
TRAIN_STAGES = [f"train@{v}-0" for v in VARIANTS]
EVAL_STAGES = [f"evaluate@{v}-0" for v in VARIANTS]
REPORT_STAGES = ["report"]


def sh(cwd, *cmd, check=True):
    env = stage_env()
    env.pop("PYTHONPATH")  # stages must set their own (dvc.yaml), as in a user's shell
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def dvc(cwd, *args, check=True):
    return sh(cwd, str(Path(sys.executable).parent / "dvc"), *args, check=check)


def copy_tree(root: Path) -> None:
    """The working tree's tracked and untracked-but-not-ignored files, without pipeline
    outputs (data/, metrics/, dvc.lock), into ``root``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not rel.startswith(("data/", "metrics/")) and rel != "dvc.lock":
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """Tracked and untracked-but-not-ignored files of the working tree, committed into a
    fresh git repository, with the smoke preset written into params.yaml."""
    root = tmp_path_factory.mktemp("clone")
    copy_tree(root)
    (root / "params.yaml").write_text(yaml.safe_dump(
        smoke_params(eval={"tasks": {"piqa": TASK_FILE}}), sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    sh(root, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "smoke")
    dvc(root, "repro")
    return root


def lock_outs(root):
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {name: [(o["path"], o["md5"]) for o in st.get("outs", [])]
            for name, st in lock["stages"].items()}


def test_repro_writes_every_data_output(clone):
    for rel in ["data/raw/shakespeare.parquet", "data/raw/synthetic.parquet",
                "data/filtered/docs.parquet", "data/shards/manifest.json",
                "data/tokenizer/tokenizer.json", "data/tokens/manifest.json"]:
        assert (clone / rel).is_file(), rel
    manifest = json.loads((clone / "data/tokens/manifest.json").read_text())
    for split in ("train", "val", "test"):
        rows = open_rows(clone / "data/tokens", split)   # the token shards, as one array
        assert rows.shape == (manifest["splits"][split]["rows"], 65)
        assert int(np.asarray(rows).max()) < manifest["vocab_size"]
    metrics = json.loads((clone / "metrics/data.json").read_text())
    assert metrics["sources"]["shakespeare"]["docs_in"] == 60
    assert metrics["sources"]["synthetic"]["docs_out"] == 40
    assert metrics["tokenizer"]["vocab_size"] == 512
    assert metrics["tokens"]["train"] > metrics["tokens"]["val"] > 0
    assert set(metrics["filter_drops"]) == {"too_short", "too_long", "low_alpha",
                                            "not_english", "exact_dup", "near_dup"}


def test_repro_trains_every_variant_with_logs_and_final_weights(clone):
    import torch
    for variant, run in zip(VARIANTS, RUNS):
        summary = json.loads((clone / f"metrics/train/{run}/metrics.json").read_text())
        assert summary["step"] == 4 and summary["skipped_steps"] == 0
        assert summary["val"]["loss"] > 0 and summary["tokens_seen"] == 4 * 2 * 64
        log = (clone / f"metrics/train/{run}/log.jsonl").read_text().splitlines()
        assert [json.loads(l)["step"] for l in log if '"train"' in l] == [1, 2, 3, 4]
        assert (clone / f"metrics/train/{run}/plots/metrics/train/loss.tsv").is_file()
        payload = torch.load(clone / f"models/{run}.pt", weights_only=False)
        assert payload["config"]["variant"] == variant and payload["progress"]["step"] == 4
        assert payload["config"]["seed"] == 0
    assert "update_norm/memory" in (clone / "metrics/train/hope-s0/log.jsonl").read_text()


def test_repro_evaluates_every_variant_with_records_and_lineage(clone):
    for run in RUNS:
        result = json.loads((clone / f"metrics/eval/{run}.json").read_text())
        offline = result["offline"]
        assert 1 < offline["perplexity"]["token_perplexity"] < float("inf")
        assert 0 <= offline["passkey"]["acc"] <= 1
        assert offline["choice"]["chance"]["acc"] == 0.25
        assert result["lineage"]["tokenizer_sha256"] == json.loads(
            (clone / "metrics/data.json").read_text())["tokenizer"]["sha256"]
        assert list((clone / f"metrics/eval/{run}").glob("*.jsonl"))
        assert result["train_seed"] == 0


def test_repro_ends_with_the_report(clone):
    summary = json.loads((clone / "metrics/summary.json").read_text())
    assert set(summary) == set(VARIANTS) | {"chance", "seeds", "paired"}
    for variant, run in zip(VARIANTS, RUNS):
        train = json.loads((clone / f"metrics/train/{run}/metrics.json").read_text())
        result = json.loads((clone / f"metrics/eval/{run}.json").read_text())
        assert summary[variant]["val_loss"] == {"mean": train["val"]["loss"], "n": 1,
                                                "seed0": train["val"]["loss"]}
        assert summary[variant]["ppl_token"]["mean"] == \
            result["offline"]["perplexity"]["token_perplexity"]
    assert "| metric | HOPE | TITAN | Transformer++ | chance |" in \
        (clone / "metrics/report.md").read_text()
    for name in ["loss", "teach", "scores", "long_context", "icl_by_position", "seeds"]:
        assert (clone / f"plots/figures/{name}.png").read_bytes()[:4] == b"\x89PNG"
    # Every plot definition finds its data: the main pipeline's, and the long-context
    # study's (`dvc plots show` collects every dvc.yaml; the study's data is committed).
    shown = json.loads(dvc(clone, "plots", "show", "--json", "-o", str(clone / "dvc_plots")).stdout)
    vega = {name for name, items in shown["data"].items() if items and items[0]["type"] == "vega"}
    assert vega == {"loss", "teach_scale", "update_norm", "scores", "passkey", "icl_position",
                    "seeds", "retrieval_accuracy", "key_loglik"}
    # The in-context section: every memory variant streamed with its clips off and stayed
    # bounded; the transformer has no fast weights to stream.
    for variant in ["hope", "titan"]:
        stream = json.loads((clone / f"metrics/eval/{variant}-s0.json").read_text())["icl"]["stream"]
        assert stream["finite"] and 0.5 <= stream["min_ratio"] and stream["max_ratio"] <= 2.0
        mean = {k: summary[variant][k]["mean"] for k in ("icl_gain", "icl_loss_off", "icl_loss_on")}
        assert mean["icl_gain"] == pytest.approx(mean["icl_loss_off"] - mean["icl_loss_on"],
                                                 abs=1e-12)
    assert "stream" not in json.loads((clone / "metrics/eval/transformer-s0.json").read_text())["icl"]


def test_gate_passes_an_unchanged_run_and_fails_a_planted_regression(clone):
    sh(clone, "git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    sh(clone, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "lock")
    gate = [sys.executable, "-m", "nlrepro.report.gate"]
    env_ok = sh(clone, "env", "PYTHONPATH=src", *gate)
    assert env_ok.stdout.rstrip().endswith("gate passed"), env_ok.stdout
    path = clone / "metrics/summary.json"
    original = path.read_text()
    summary = json.loads(original)
    summary["titan"]["val_loss"]["mean"] += 0.5
    summary["titan"]["val_loss"]["seed0"] += 0.5
    path.write_text(json.dumps(summary))
    try:
        failed = sh(clone, "env", "PYTHONPATH=src", *gate, check=False)
        assert failed.returncode == 1
        assert "gate FAILED: 1 metric(s) past their threshold: titan.val_loss" in failed.stdout
    finally:
        path.write_text(original)


def test_second_repro_skips_every_stage_but_the_check(clone):
    out = dvc(clone, "repro").stdout
    assert [l for l in out.splitlines() if l.startswith("Running stage")] == \
        ["Running stage 'check':"]
    for stage in DATA_STAGES + TRAIN_STAGES + EVAL_STAGES + REPORT_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in out


def test_editing_a_task_file_reruns_exactly_the_stages_that_read_it(clone):
    path = clone / TASK_FILE
    original = path.read_text()
    row = json.loads(original.splitlines()[0])
    path.write_text(original + json.dumps({**row, "goal": "How do I dry wet boots?"}) + "\n")
    try:
        out = dvc(clone, "repro").stdout
        ran = {l.split("'")[1] for l in out.splitlines() if l.startswith("Running stage")}
        assert ran == {"check", *EVAL_STAGES, "report"}, out
        result = json.loads((clone / "metrics/eval/hope-s0.json").read_text())
        assert result["zero_shot"]["piqa"]["n"] == 3
    finally:
        path.write_text(original)
        dvc(clone, "repro")


def test_a_misspelled_key_anywhere_stops_repro_before_any_stage(clone):
    params = clone / "params.yaml"
    original = params.read_text()
    params.write_text(original + "tech_scale: 0.1\n")
    try:
        r = dvc(clone, "repro", check=False)
        assert r.returncode != 0
        assert "tech_scale: unknown key (did you mean 'teach_scale'?" in r.stdout + r.stderr
        assert [l for l in r.stdout.splitlines() if l.startswith("Running stage")] == \
            ["Running stage 'check':"]
    finally:
        params.write_text(original)


def test_forced_rerun_gives_byte_identical_outputs(clone):
    def val(run):
        return json.loads((clone / f"metrics/train/{run}/metrics.json").read_text())["val"]

    before, val_before = lock_outs(clone), {r: val(r) for r in RUNS}
    dvc(clone, "repro", "-f")
    after = lock_outs(clone)
    for stage, outs in before.items():
        # Data and final weights byte for byte; metrics files also hold timings.
        same = [o for o in outs if not o[0].startswith("metrics/")]
        assert same == [o for o in after[stage] if not o[0].startswith("metrics/")], stage
    assert {r: val(r) for r in RUNS} == val_before


def test_metrics_show_prints_the_data_metrics(clone):
    out = dvc(clone, "metrics", "show").stdout
    assert "metrics/data.json" in out and "tokenizer.vocab_size" in out


def test_experiment_on_vocab_size_reruns_only_what_depends_on_it(clone):
    sh(clone, "git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    sh(clone, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "lock",
       "--allow-empty")
    out = dvc(clone, "exp", "run", "-S", "data.tokenizer.vocab_size=384").stdout
    for stage in DATA_STAGES[:4]:
        assert f"Stage '{stage}' didn't change, skipping" in out
    assert "Running stage 'tokenizer'" in out and "Running stage 'tokenize'" in out
    metrics = json.loads((clone / "metrics/data.json").read_text())
    assert metrics["tokenizer"]["vocab_size"] == 384


def test_experiment_adding_a_seed_runs_only_that_seeds_stages(clone):
    """`dvc exp run -S 'train.seeds=[0,1]'`: seed 0's train and evaluate stages are
    skipped, seed 1's run, and the report aggregates two seeds with an interval."""
    sh(clone, "git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    sh(clone, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "lock",
       "--allow-empty")
    out = dvc(clone, "exp", "run", "-S", "train.seeds=[0,1]").stdout
    for v in VARIANTS:
        assert f"Stage 'train@{v}-0' didn't change, skipping" in out
        assert f"Stage 'evaluate@{v}-0' didn't change, skipping" in out
        assert f"Running stage 'train@{v}-1'" in out and f"Running stage 'evaluate@{v}-1'" in out
    summary = json.loads((clone / "metrics/summary.json").read_text())
    assert summary["seeds"] == {"n": 2}
    hope = summary["hope"]["val_loss"]
    seeds = [json.loads((clone / f"metrics/train/hope-s{k}/metrics.json").read_text())["val"]["loss"]
             for k in (0, 1)]
    assert [hope["seed0"], hope["seed1"]] == seeds and seeds[0] != seeds[1]
    assert hope["ci95_low"] < hope["mean"] < hope["ci95_high"]
    assert "Training seeds 0, 1" in (clone / "metrics/report.md").read_text()


def test_editing_a_shared_module_marks_exactly_the_stages_that_import_it(clone):
    """dvc.yaml's code deps are derived from the imports (tests/test_stage_deps.py): an
    edit to data/tokenizer.py is reported for the tokenizer, tokenize and evaluate stages
    (and `check`, which always runs), for no other."""
    path = clone / "src/nlrepro/data/tokenizer.py"
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        out = dvc(clone, "status", "dvc.yaml").stdout   # the main pipeline, not the study
        changed = {l.rstrip(":") for l in out.splitlines() if l and not l.startswith(("\t", " "))}
        # every evaluate stage (one per seed the earlier experiment left), nothing else
        assert {n.split("@")[0] for n in changed} == {"check", "tokenizer", "tokenize",
                                                       "evaluate"}, out
        assert set(EVAL_STAGES) <= changed
    finally:
        path.write_text(original)

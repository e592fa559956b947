"""Stage report: hand-written training and evaluation outputs of the variants ->
metrics/summary.json, metrics/report.md, plots/figures/*.png and plots/data/*.csv.
Every number is checked against the inputs written here; bad input is one line, exit 2,
and nothing written."""
from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from conftest import smoke_params
from stages.report import main as report_main

VOCAB = 512


def train_log(tps: list[float], nonfinite_at: int | None = None) -> list[dict]:
    entries = []
    for i, t in enumerate(tps, 1):
        loss = math.nan if i == nonfinite_at else 6.0 - 0.5 * i
        entries.append({"kind": "train", "step": i, "metrics": {
            "loss": loss, "teach_scale": 0.01 * i, "tokens_per_s": t,
            "update_norm/memory": 0.1 * i, "update_norm/cms0": 0.01 * i}})
    entries.append({"kind": "val", "step": len(tps), "metrics": {"loss": 4.5, "ppl": math.exp(4.5)}})
    return entries


def eval_result(variant: str, choice: float, passkey: dict, zero_shot: dict | None = None) -> dict:
    return {
        "variant": variant,
        "offline": {
            "perplexity": {"token_perplexity": 80.0, "bits_per_byte": 1.9, "n": 4,
                           "chance": {"token_perplexity": float(VOCAB), "bits_per_byte": 3.5}},
            "last_word": {"acc": 0.125, "perplexity": 700.0, "n": 8,
                          "chance": {"acc": 0.001, "perplexity": 20000.0}},
            "choice": {"acc": choice, "acc_norm": choice, "n": 8,
                       "chance": {"acc": 0.25, "acc_norm": 0.25}},
            "passkey": {"acc": sum(sum(r.values()) for r in passkey.values()) / 4, "n": 4,
                        "chance": 1 / 90000,
                        "acc_by_length": {L: sum(r.values()) / 2 for L, r in passkey.items()},
                        "acc_grid": passkey,
                        "key_loglik_by_length": {L: -12.0 for L in passkey}},
        },
        "zero_shot": zero_shot or {},
        "lineage": {"checkpoint": {"path": f"models/{variant}.pt", "sha256": "ab" * 32,
                                   "step": 3}, "teach_scale": 0.03,
                    "teach_scale_source": "checkpoint", "git_commit": "c0ffee"},
    }


def write_variant(root, variant, *, tps, val_loss, choice, passkey, zero_shot=None,
                  nonfinite_at=None):
    tdir = root / "metrics/train" / variant
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "log.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in train_log(tps, nonfinite_at)))
    (tdir / "metrics.json").write_text(json.dumps({
        "val": {"loss": val_loss, "ppl": math.exp(val_loss)}, "skipped_steps": 0.0,
        "max_update_norm": 0.3, "teach_scale_final": 0.03, "tokens_seen": 768.0,
        "params": 1000.0 + len(variant), "train_seconds": 2.5, "step": len(tps)}))
    edir = root / "metrics/eval"
    edir.mkdir(parents=True, exist_ok=True)
    (edir / f"{variant}.json").write_text(
        json.dumps(eval_result(variant, choice, passkey, zero_shot)))


ARC = {"arc_easy": {"acc": 0.5, "acc_norm": 0.625, "n": 8,
                    "chance": {"acc": 0.25, "acc_norm": 0.25}}}
GRID_HOPE = {"64": {"0.0": 1.0, "1.0": 0.0}, "128": {"0.0": 0.0, "1.0": 0.0}}
GRID_ZERO = {"64": {"0.0": 0.0, "1.0": 0.0}, "128": {"0.0": 0.0, "1.0": 0.0}}


class Run:
    """What the stage printed and how it exited, run in-process (a subprocess per call
    would spend most of the time importing torch)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class Project:
    def __init__(self, root, capsys):
        self.root, self._capsys = root, capsys

    def write_params(self, params: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def run(self, stage: str) -> Run:
        assert stage == "stages.report"
        self._capsys.readouterr()
        try:
            report_main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        out = self._capsys.readouterr()
        return Run(code, out.out, out.err)


@pytest.fixture
def project(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    return Project(tmp_path, capsys)


@pytest.fixture
def proj(project):
    root = project.root
    write_variant(root, "hope", tps=[100.0, 300.0, 200.0], val_loss=4.25, choice=0.5,
                  passkey=GRID_HOPE, zero_shot=ARC)
    write_variant(root, "titan", tps=[150.0, 150.0, 900.0], val_loss=4.5, choice=0.375,
                  passkey=GRID_ZERO, zero_shot=ARC)
    write_variant(root, "transformer", tps=[400.0, 400.0, 400.0], val_loss=4.75, choice=0.25,
                  passkey=GRID_ZERO, zero_shot=ARC)
    project.write_params(smoke_params())
    return project


OUTPUTS = ["metrics/summary.json", "metrics/report.md", "plots/figures", "plots/data"]


def test_summary_holds_each_variants_numbers_and_chance(proj):
    r = proj.run("stages.report")
    assert r.returncode == 0, r.stderr
    assert "lowest val loss HOPE 4.250" in r.stdout
    s = json.loads((proj.root / "metrics/summary.json").read_text())
    assert set(s) == {"hope", "titan", "transformer", "chance"}
    hope = s["hope"]
    assert hope["val_loss"] == 4.25 and hope["params"] == 1004 and hope["steps"] == 3
    assert hope["tokens_per_s"] == 200.0               # median of 100, 300, 200
    assert s["titan"]["tokens_per_s"] == 150.0          # median, not the 900 outlier
    assert hope["choice_acc"] == 0.5 and hope["ppl_token"] == 80.0
    assert hope["passkey_acc_len64"] == 0.5 and hope["passkey_acc_len128"] == 0.0
    assert hope["passkey_key_loglik_len64"] == -12.0
    assert hope["zs_arc_easy_acc"] == 0.5 and hope["zs_arc_easy_acc_norm"] == 0.625
    chance = s["chance"]
    assert chance["val_loss"] == pytest.approx(math.log(VOCAB))
    assert chance["val_ppl"] == VOCAB and chance["choice_acc"] == 0.25
    assert chance["last_word_ppl"] == 20000.0 and chance["zs_arc_easy_acc_norm"] == 0.25
    assert chance["passkey_key_loglik_len64"] == pytest.approx(math.log(1 / 90000))


def test_markdown_table_puts_chance_beside_every_score(proj):
    assert proj.run("stages.report").returncode == 0
    md = (proj.root / "metrics/report.md").read_text()
    assert "| metric | HOPE | TITAN | Transformer++ | chance |" in md
    assert "| real-vs-distractor acc | 0.500 | 0.375 | 0.250 | 0.25 |" in md
    assert "| val loss (nats/token) | 4.250 | 4.500 | 4.750 | 6.24 |" in md
    # Throughput as a ratio to the reference variant (transformer, 400 tokens/s).
    assert "| train tokens/s (x Transformer++) | 200 (0.50x) | 150 (0.38x) | 400 (1.00x) | |" in md
    assert "| arc_easy acc_norm | 0.625 | 0.625 | 0.625 | 0.25 |" in md
    assert "| 64 | 0.500 | 0.000 | 0.000 | 1.11e-05 |" in md
    assert "../plots/figures/loss.png" in md


def test_plot_tables_are_long_format_per_variant(proj):
    assert proj.run("stages.report").returncode == 0
    data = proj.root / "plots/data"

    def rows(name):
        with (data / f"{name}.csv").open() as f:
            return list(csv.DictReader(f))

    loss = rows("loss")
    assert [r for r in loss if r["series"] == "HOPE" and r["kind"] == "val"] == \
        [{"step": "3", "series": "HOPE", "kind": "val", "loss": "4.5"}]
    assert len(loss) == 3 * (3 + 1)
    norms = rows("update_norm")
    assert {(r["series"], r["kind"]) for r in norms} == {
        (v, lvl) for v in ("HOPE", "TITAN", "Transformer++") for lvl in ("memory", "cms0")}
    scores = rows("scores")
    arc = [r for r in scores if r["metric"] == "arc_easy acc_norm"]
    assert [(r["series"], float(r["score"]), float(r["chance"])) for r in arc] == [
        ("HOPE", 0.625, 0.25), ("TITAN", 0.625, 0.25), ("Transformer++", 0.625, 0.25)]
    passkey = rows("passkey")
    assert [(r["length"], r["acc"]) for r in passkey if r["series"] == "HOPE"] == \
        [("64", "0.5"), ("128", "0.0")]


def test_figures_are_pngs_and_reruns_are_byte_identical(proj):
    assert proj.run("stages.report").returncode == 0
    names = ["loss", "teach", "scores", "long_context"]
    first = {n: (proj.root / "plots/figures" / f"{n}.png").read_bytes() for n in names}
    summary = (proj.root / "metrics/summary.json").read_bytes()
    for blob in first.values():
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000
    assert proj.run("stages.report").returncode == 0
    assert {n: (proj.root / "plots/figures" / f"{n}.png").read_bytes() for n in names} == first
    assert (proj.root / "metrics/summary.json").read_bytes() == summary


def test_a_non_finite_loss_is_kept_and_flagged(project):
    root = project.root
    for v, loss in [("hope", math.nan), ("titan", 4.5), ("transformer", 4.75)]:
        write_variant(root, v, tps=[100.0, 100.0], val_loss=loss, choice=0.5,
                      passkey=GRID_ZERO, nonfinite_at=2 if v == "hope" else None)
    project.write_params(smoke_params())
    r = project.run("stages.report")
    assert r.returncode == 0, r.stderr
    md = (root / "metrics/report.md").read_text()
    assert "| val loss (nats/token) | **nan** | 4.500 | 4.750 |" in md
    loss = (root / "plots/data/loss.csv").read_text().splitlines()
    assert "2,HOPE,train," in loss                      # empty cell, not the string 'nan'


@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / "metrics/eval/titan.json").unlink(),
     "metrics/eval/titan.json: not found (run `dvc repro evaluate@titan` first)"),
    (lambda root: (root / "metrics/train/hope/log.jsonl").write_text('{"kind": "train"}\n'),
     "metrics/train/hope/log.jsonl:1: not a log entry"),
    (lambda root: (root / "metrics/train/transformer/metrics.json").write_text("{oops"),
     "metrics/train/transformer/metrics.json: not valid JSON"),
    (lambda root: (root / "metrics/train/hope/metrics.json").write_text('{"params": 1}'),
     "metrics/train/hope/metrics.json: missing 'tokens_seen'"),
])
def test_bad_input_is_one_line_and_writes_nothing(proj, breakage, message):
    breakage(proj.root)
    r = proj.run("stages.report")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), r.stderr
    for out in OUTPUTS:
        assert not (proj.root / out).exists(), out


def test_only_the_configured_variants_are_reported(proj):
    proj.write_params(smoke_params(train={"variants": ["hope", "transformer"]}))
    assert proj.run("stages.report").returncode == 0
    s = json.loads((proj.root / "metrics/summary.json").read_text())
    assert set(s) == {"hope", "transformer", "chance"}
    assert "TITAN" not in (proj.root / "metrics/report.md").read_text()

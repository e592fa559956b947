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


def icl_result(loss_on: float, ablation: dict, clip_rate: dict, stream: bool) -> dict:
    """An evaluation's ``icl`` object: 2 sequences of 128 tokens, two position buckets.
    Numbers are binary fractions so copies compare exactly."""
    out = {"sequences": 2, "length": 128, "teach_scale": 1.0,
           "loss_on": loss_on, "loss_off": loss_on + 0.25, "gain": 0.25, "gain_second_half": 0.375,
           "ablation": {m: {"loss": loss_on + g, "gain": g} for m, g in ablation.items()},
           "by_position": {"on": [{"start": 0, "end": 64, "loss": loss_on + 0.5},
                                  {"start": 64, "end": 128, "loss": loss_on - 0.5}],
                           "off": [{"start": 0, "end": 64, "loss": loss_on + 0.5},
                                   {"start": 64, "end": 128, "loss": loss_on}]},
           "clip_rate": clip_rate}
    if stream:
        out["stream"] = {"tokens": 1024, "teach_scale": 1.0, "finite": True,
                         "max_ratio": 1.5, "min_ratio": 0.75,
                         "norms": {"layer0.memory": {"start": 6.5, "min_ratio": 0.75,
                                                     "max_ratio": 1.5}}}
    return out


ICL = {
    "hope": icl_result(5.0, {"memory": 0.125, "selfmod": 0.0625, "cms0": 0.03125},
                       {"residual_memory": 0.0, "residual_cms": 0.01, "inner": 0.0,
                        "teach": 0.02}, stream=True),
    "titan": icl_result(5.25, {"memory": 0.25}, {"inner": 0.5}, stream=True),
    "transformer": icl_result(5.5, {}, {}, stream=False),
}
ATTENTION = {"hope": ("swa", 64), "titan": ("swa", 64), "transformer": ("full", None)}
TRAIN_CLIP = {"hope": {"grad_norm": 0.25, "inner": 0.0, "residual_cms": 0.0,
                       "residual_memory": 0.0, "teach": 0.0},
              "titan": {"grad_norm": 0.5, "inner": 0.125},
              "transformer": {"grad_norm": 0.75}}


def eval_result(variant: str, choice: float, passkey: dict, zero_shot: dict | None = None,
                icl: bool = True) -> dict:
    attention, window = ATTENTION[variant]
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
        **({"icl": ICL[variant]} if icl else {}),
        "lineage": {"checkpoint": {"path": f"models/{variant}.pt", "sha256": "ab" * 32,
                                   "step": 3}, "teach_scale": 0.03,
                    "teach_scale_source": "checkpoint", "git_commit": "c0ffee",
                    **({"attention": attention, "window": window} if icl else {})},
    }


def write_variant(root, variant, *, tps, val_loss, choice, passkey, zero_shot=None,
                  nonfinite_at=None, icl=True, seed=0):
    """One run's train and eval outputs (``<variant>-s<seed>``); ``icl=False``: as written
    before the in-context learning measurement (no ``icl``, ``clip_rate`` or attention)."""
    tdir = root / "metrics/train" / f"{variant}-s{seed}"
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "log.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in train_log(tps, nonfinite_at)))
    (tdir / "metrics.json").write_text(json.dumps({
        "val": {"loss": val_loss, "ppl": math.exp(val_loss)}, "skipped_steps": 0.0,
        "max_update_norm": 0.3, "teach_scale_final": 0.03, "tokens_seen": 768.0,
        "params": 1000.0 + len(variant), "train_seconds": 2.5, "step": len(tps),
        **({"clip_rate": TRAIN_CLIP[variant]} if icl else {})}))
    edir = root / "metrics/eval"
    edir.mkdir(parents=True, exist_ok=True)
    (edir / f"{variant}-s{seed}.json").write_text(
        json.dumps(eval_result(variant, choice, passkey, zero_shot, icl)))


def flat(summary: dict) -> dict:
    """``{variant: {metric: mean}, "chance": ...}`` of metrics/summary.json."""
    out = {v: {m: stat["mean"] for m, stat in metrics.items()}
           for v, metrics in summary.items() if v not in ("chance", "seeds", "paired")}
    out["chance"] = summary["chance"]
    return out


def edit_json(path, edit) -> None:
    """Rewrite a JSON file after ``edit(data)`` changed it in place."""
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


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
    assert "lowest mean val loss HOPE 4.250" in r.stdout
    raw = json.loads((proj.root / "metrics/summary.json").read_text())
    assert set(raw) == {"hope", "titan", "transformer", "chance", "seeds", "paired"}
    # One seed: the value, its seed and n, and no spread or interval at all.
    assert raw["hope"]["val_loss"] == {"mean": 4.25, "n": 1, "seed0": 4.25}
    assert raw["seeds"] == {"n": 1}
    assert set(raw["paired"]) == {"hope-transformer", "titan-transformer", "hope-titan"}
    assert raw["paired"]["hope-transformer"]["val_loss"] == {"mean": -0.5, "n": 1,
                                                             "diff_seed0": -0.5, "wins": 1}
    s = flat(raw)
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
    names = ["loss", "teach", "scores", "long_context", "icl_by_position", "seeds"]
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
    (lambda root: (root / "metrics/eval/titan-s0.json").unlink(),
     "metrics/eval/titan-s0.json: not found (run `dvc repro evaluate@titan-0` first)"),
    (lambda root: (root / "metrics/train/hope-s0/log.jsonl").write_text('{"kind": "train"}\n'),
     "metrics/train/hope-s0/log.jsonl:1: not a log entry"),
    (lambda root: (root / "metrics/train/transformer-s0/metrics.json").write_text("{oops"),
     "metrics/train/transformer-s0/metrics.json: not valid JSON"),
    (lambda root: (root / "metrics/train/hope-s0/metrics.json").write_text('{"params": 1}'),
     "metrics/train/hope-s0/metrics.json: missing 'tokens_seen'"),
    (lambda root: edit_json(root / "metrics/eval/titan-s0.json",
                            lambda d: d["icl"].update(gain="x")),
     "metrics/eval/titan-s0.json: 'icl.gain' is not a number (got \"x\")"),
    (lambda root: edit_json(root / "metrics/eval/hope-s0.json",
                            lambda d: d["icl"]["by_position"]["off"][1].pop("loss")),
     "metrics/eval/hope-s0.json icl.by_position.off[1]: missing 'loss'"),
    (lambda root: edit_json(root / "metrics/eval/hope-s0.json",
                            lambda d: d["icl"]["stream"].update(finite="yes")),
     "metrics/eval/hope-s0.json: 'icl.stream.finite' is not true or false"),
    (lambda root: edit_json(root / "metrics/train/transformer-s0/metrics.json",
                            lambda d: d.update(clip_rate=[0.5])),
     "metrics/train/transformer-s0/metrics.json: 'clip_rate' is not an object"),
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
    assert set(s) == {"hope", "transformer", "chance", "seeds", "paired"}
    assert set(s["paired"]) == {"hope-transformer"}
    assert "TITAN" not in (proj.root / "metrics/report.md").read_text()


def test_in_context_learning_numbers_are_copied_into_the_summary(proj):
    assert proj.run("stages.report").returncode == 0
    s = flat(json.loads((proj.root / "metrics/summary.json").read_text()))

    def part(metrics: dict, prefix: str) -> dict:
        return {k: v for k, v in metrics.items() if k.startswith(prefix)}

    scalars = ("loss_on", "loss_off", "gain", "gain_second_half")
    hope, icl = s["hope"], ICL["hope"]
    ablation = {f"icl_gain_{m}": a["gain"] for m, a in icl["ablation"].items()}
    assert part(hope, "icl_") == {**{f"icl_{k}": icl[k] for k in scalars}, **ablation}
    assert part(hope, "stream_") == {"stream_max_ratio": 1.5, "stream_min_ratio": 0.75,
                                     "stream_finite": 1.0}
    assert part(hope, "clip_rate_") == {f"clip_rate_{g}": r for g, r in icl["clip_rate"].items()}
    assert part(hope, "train_clip_rate_") == \
        {f"train_clip_rate_{g}": r for g, r in TRAIN_CLIP["hope"].items()}
    tr = s["transformer"]                      # no mechanism, no stream, no guard at eval
    assert part(tr, "icl_") == {f"icl_{k}": ICL["transformer"][k] for k in scalars}
    assert part(tr, "stream_") == part(tr, "clip_rate_") == {}
    assert part(tr, "train_clip_rate_") == {"train_clip_rate_grad_norm": 0.75}
    assert not [k for k in s["chance"] if "icl" in k or "stream" in k or "clip_rate" in k]


def test_in_context_learning_section_of_the_report(proj):
    assert proj.run("stages.report").returncode == 0
    md = (proj.root / "metrics/report.md").read_text()
    section = md.split("## In-context learning\n", 1)[1].split("\n## ", 1)[0]
    assert "over 2 sequences of 128 validation tokens." in section
    assert "teach scale 0" in section
    for row in [
        "| in-context learning | HOPE | TITAN | Transformer++ |",
        "| attention | swa (64) | swa (64) | full |",
        "| loss, updates on (nats/token) | 5.000 | 5.250 | 5.500 |",
        "| loss, updates off (nats/token) | 5.250 | 5.500 | 5.750 |",
        "| gain (off - on) | 0.250 | 0.250 | 0.250 |",
        "| gain on the second half | 0.375 | 0.375 | 0.375 |",
        "| gain of memory | 0.125 | 0.250 |  |",
        "| gain of selfmod | 0.062 |  |  |",
        "| gain of cms0 | 0.031 |  |  |",
        "| stream: max fast-weight norm / start | 1.5 | 1.5 |  |",
        "| stream: min fast-weight norm / start | 0.75 | 0.75 |  |",
        "| stream: finite | yes | yes |  |",
        "| guard binding in training: grad_norm | 25.0% | 50.0% | 75.0% |",
        "| guard binding in training: inner | 0.0% | 12.5% |  |",
        "| guard binding in evaluation: inner | 0.0% | 50.0% |  |",
        "| guard binding in evaluation: teach | 2.0% |  |  |",
    ]:
        assert row + "\n" in section, row
    assert "../plots/figures/icl_by_position.png" in md


def test_in_context_learning_plot_table(proj):
    assert proj.run("stages.report").returncode == 0
    with (proj.root / "plots/data/icl_position.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["position", "series", "kind", "loss"]
    assert [(r["position"], r["kind"], float(r["loss"])) for r in rows if r["series"] == "HOPE"] \
        == [("32", "on", 5.5), ("96", "on", 4.5), ("32", "off", 5.5), ("96", "off", 5.0)]
    assert len(rows) == 3 * 2 * 2


def test_a_variant_without_icl_is_reported_as_not_measured(project):
    root = project.root
    for v in ("hope", "titan", "transformer"):
        write_variant(root, v, tps=[100.0, 100.0], val_loss=4.5, choice=0.5,
                      passkey=GRID_ZERO, icl=v != "titan")
    project.write_params(smoke_params())
    r = project.run("stages.report")
    assert r.returncode == 0, r.stderr
    titan = flat(json.loads((root / "metrics/summary.json").read_text()))["titan"]
    assert not [k for k in titan if k.startswith(("icl_", "stream_", "clip_rate_",
                                                  "train_clip_rate_"))]
    md = (root / "metrics/report.md").read_text()
    assert "| attention | swa (64) | not recorded | full |" in md
    assert "| loss, updates on (nats/token) | 5.000 | not measured | 5.500 |" in md
    assert "| gain of memory | 0.125 | not measured |  |" in md
    assert "| guard binding in training: grad_norm | 25.0% | not measured | 75.0% |" in md
    csv_text = (root / "plots/data/icl_position.csv").read_text()
    assert "HOPE" in csv_text and "TITAN" not in csv_text

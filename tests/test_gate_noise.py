"""The noise calibration command (report/noise.py): seed spread and machine moves of
every gated metric against the gate rules, computed by hand here."""
from __future__ import annotations

import json
import math

import pytest

from nlrepro.report.config import GateRule
from nlrepro.report.noise import noise_table, per_seed


def seeded(values: dict[str, dict[str, list[float]]]) -> dict:
    return {"seeds": {"n": 3}, "chance": {"val_loss": 8.3},
            "paired": {"hope-titan": {"val_loss": {"mean": -0.1, "diff_seed0": -0.1}}},
            **{v: {m: {"mean": sum(xs) / len(xs), **{f"seed{k}": x for k, x in enumerate(xs)}}
                   for m, xs in metrics.items()} for v, metrics in values.items()}}


RULES = {"val_loss": GateRule("lower", abs=0.1), "*acc*": GateRule("higher", abs=0.01)}


def test_noise_rows_by_hand():
    seeds = seeded({"hope": {"val_loss": [5.0, 5.1, 5.2], "choice_acc": [0.4, 0.5, 0.6],
                             "tokens_per_s": [1.0, 2.0, 3.0]}})
    a = {"hope": {"val_loss": 5.0, "choice_acc": 0.4}}            # old flat summary: seed 0
    b = seeded({"hope": {"val_loss": [5.08], "choice_acc": [0.41]}})
    rows = {r["metric"]: r for r in noise_table(seeds, [(a, b)], RULES)}
    assert set(rows) == {"hope.val_loss", "hope.choice_acc"}      # timings have no rule
    loss = rows["hope.val_loss"]
    assert loss["seed_sd"] == pytest.approx(0.1) and loss["machine"] == pytest.approx(0.08)
    assert loss["need"] == pytest.approx(3 * math.sqrt(2) * 0.1)   # 0.424 > 0.08
    assert loss["allowed"] == 0.1 and not loss["covered"]
    acc = rows["hope.choice_acc"]
    assert acc["seed_sd"] == pytest.approx(0.1) and not acc["covered"]
    wide = {"val_loss": GateRule("lower", abs=0.5), "*acc*": GateRule("higher", abs=0.5)}
    assert all(r["covered"] for r in noise_table(seeds, [(a, b)], wide))


def test_per_seed_reads_both_layouts():
    assert per_seed({"hope": {"val_loss": 5.0}, "chance": {"val_loss": 8.0}}) == \
        {("hope", "val_loss"): {0: 5.0}}
    assert per_seed(seeded({"titan": {"val_loss": [1.0, 2.0]}})) == \
        {("titan", "val_loss"): {0: 1.0, 1: 2.0}}


def test_command_exit_status(tmp_path, monkeypatch, capsys):
    from conftest import smoke_params
    import yaml
    from nlrepro.report.noise import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(smoke_params(gate={"rules": {
        "val_loss": {"better": "lower", "abs": 0.5}}})))
    (tmp_path / "s.json").write_text(json.dumps(seeded({"hope": {"val_loss": [5.0, 5.1, 5.2]}})))
    assert main(["--seeds", "s.json"]) == 0
    assert "every gated metric's rule covers the measured noise (1 metrics)" in capsys.readouterr().out
    (tmp_path / "one.json").write_text(json.dumps(seeded({"hope": {"val_loss": [5.0]}})))
    with pytest.raises(SystemExit) as exc:
        main(["--seeds", "one.json"])
    assert exc.value.code == 2
    assert "one seed only" in capsys.readouterr().err

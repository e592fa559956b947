"""Aggregation over training seeds (report/seeds.py) against hand computations, and the
report stage on three seeds per variant: per-seed values, mean, sd, Student-t interval,
paired differences with wins, the tables, seeds.csv and the curves averaged over seeds."""
from __future__ import annotations

import csv
import json
import math

import pytest

from conftest import smoke_params
from nlrepro.report.seeds import (aggregate, comparisons, lower_is_better, paired_difference,
                                  seed_stats, t_quantile)
from test_report import GRID_HOPE, GRID_ZERO, project, write_variant  # noqa: F401 (fixture)


def t_975_df2() -> float:
    """t_{0.975} with 2 degrees of freedom in closed form: (2p - 1) / sqrt(2 p (1 - p))."""
    p = 0.975
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def test_student_t_quantile_matches_the_closed_form():
    assert t_quantile(3) == pytest.approx(t_975_df2(), rel=1e-9)      # 4.3027
    assert t_quantile(2) == pytest.approx(12.7062, abs=1e-4)          # df 1: tan(0.475 pi)
    assert t_quantile(2) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-9)
    with pytest.raises(ValueError):
        t_quantile(1)


def test_seed_stats_by_hand():
    s = seed_stats({0: 1.0, 1: 2.0, 2: 4.0})
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = t_975_df2() * sd / math.sqrt(3)
    assert s.mean == pytest.approx(7 / 3) and s.std == pytest.approx(sd)
    assert (s.ci_low, s.ci_high) == (pytest.approx(7 / 3 - half), pytest.approx(7 / 3 + half))
    assert s.as_json() == {"mean": s.mean, "n": 3, "std": s.std, "ci95_low": s.ci_low,
                           "ci95_high": s.ci_high, "seed0": 1.0, "seed1": 2.0, "seed2": 4.0}
    one = seed_stats({5: 2.5})
    assert one.as_json() == {"mean": 2.5, "n": 1, "seed5": 2.5}      # no interval key at all
    bad = seed_stats({0: 1.0, 1: math.nan})
    assert math.isnan(bad.mean) and bad.std is None


def test_paired_difference_counts_wins_in_the_metrics_direction():
    assert lower_is_better("val_loss") and lower_is_better("ppl_token")
    assert lower_is_better("bits_per_byte") and not lower_is_better("choice_acc_norm")
    assert not lower_is_better("icl_gain")
    hope, ref = {0: 5.0, 1: 5.1, 2: 5.3}, {0: 5.2, 1: 5.2, 2: 5.2}
    p = paired_difference("val_loss", hope, ref)
    assert p.stats.values == {0: pytest.approx(-0.2), 1: pytest.approx(-0.1),
                              2: pytest.approx(0.1)}
    assert p.wins == 2 and p.stats.mean == pytest.approx(-0.2 / 3)
    assert paired_difference("choice_acc", hope, ref).wins == 1
    assert paired_difference("val_loss", {3: 1.0}, ref) is None       # no common seed


def test_aggregate_layout():
    per_seed = {"hope": {0: {"val_loss": 5.0}, 1: {"val_loss": 5.2}},
                "transformer": {0: {"val_loss": 5.3}, 1: {"val_loss": 5.3}}}
    out = aggregate(per_seed, {"val_loss": 8.3}, "transformer")
    assert set(out) == {"seeds", "hope", "transformer", "paired", "chance"}
    assert out["seeds"] == {"n": 2}
    assert out["hope"]["val_loss"]["seed1"] == 5.2
    assert list(out["paired"]) == ["hope-transformer"]
    assert out["paired"]["hope-transformer"]["val_loss"]["wins"] == 2
    assert out["paired"]["hope-transformer"]["val_loss"]["diff_seed0"] == pytest.approx(-0.3)
    # Reference not trained: the pairs in variant order.
    assert list(aggregate(per_seed, {}, "titan")["paired"]) == ["hope-transformer"]
    assert comparisons(["hope", "titan", "transformer"], "transformer") == [
        ("hope", "transformer"), ("titan", "transformer"), ("hope", "titan")]
    assert comparisons(["hope", "titan"], "transformer") == [("hope", "titan")]


# --- the report stage on three seeds --------------------------------------------------

VAL = {"hope": (4.25, 4.375, 4.5), "titan": (4.5, 4.5, 4.75), "transformer": (4.75, 4.625, 5.0)}


@pytest.fixture
def seeded(project):  # noqa: F811 (the fixture imported from test_report)
    for v, losses in VAL.items():
        for seed, loss in enumerate(losses):
            write_variant(project.root, v, seed=seed, tps=[100.0 * (seed + 1)] * 2,
                          val_loss=loss, choice=0.25 + 0.125 * seed,
                          passkey=GRID_HOPE if seed == 0 else GRID_ZERO)
    project.write_params(smoke_params(train={"seeds": [0, 1, 2]}))
    r = project.run("stages.report")
    assert r.returncode == 0, r.stderr
    assert "3 variants x 3 seeds" in r.stdout
    return project


def test_three_seeds_in_the_summary(seeded):
    s = json.loads((seeded.root / "metrics/summary.json").read_text())
    assert s["seeds"] == {"n": 3}
    hope = s["hope"]["val_loss"]
    sd = math.sqrt(((4.25 - 4.375) ** 2 + 0 + (4.5 - 4.375) ** 2) / 2)
    assert hope["mean"] == pytest.approx(4.375) and hope["std"] == pytest.approx(sd)
    assert hope["ci95_high"] - hope["mean"] == pytest.approx(t_975_df2() * sd / math.sqrt(3))
    assert [hope[f"seed{k}"] for k in range(3)] == [4.25, 4.375, 4.5]
    diff = s["paired"]["hope-transformer"]["val_loss"]   # -0.5, -0.25, -0.5
    assert diff["mean"] == pytest.approx(-1.25 / 3) and diff["wins"] == 3 and diff["n"] == 3
    titan = s["paired"]["titan-transformer"]["val_loss"]  # -0.25, -0.125, -0.25: all better
    assert titan["wins"] == 3 and titan["diff_seed1"] == pytest.approx(-0.125)
    # choice acc is the same per seed for every variant: no win, zero spread
    assert s["paired"]["hope-transformer"]["choice_acc"]["wins"] == 0
    hope_titan = s["paired"]["hope-titan"]["val_loss"]   # -0.25, -0.125, -0.25
    assert hope_titan["wins"] == 3 and hope_titan["mean"] == pytest.approx(-0.625 / 3)


def test_three_seed_tables_in_the_report(seeded):
    md = (seeded.root / "metrics/report.md").read_text()
    assert "Mean ± sd over 3 training seeds" in md
    assert "| val loss (nats/token) | 4.375 ± 0.125 | 4.583 ± 0.144 | 4.792 ± 0.191 | 6.24 |" in md
    section = md.split("## Seeds and intervals\n", 1)[1].split("\n## ", 1)[0]
    assert "mean ± 4.30 sd / sqrt(3)" in section
    half = t_975_df2() * 0.125 / math.sqrt(3)
    assert (f"| val loss (nats/token) | HOPE | 4.375 | 0.125 | [{4.375 - half:.3f}, "
            f"{4.375 + half:.3f}] | 4.250 | 4.375 | 4.500 |") in section
    paired = section.split("### Paired differences", 1)[1]
    row = next(l for l in paired.splitlines()
               if l.startswith("| val loss (nats/token) | HOPE - Transformer++"))
    assert row.endswith("| 3/3 | better |"), row        # interval below 0
    row = next(l for l in paired.splitlines()
               if l.startswith("| real-vs-distractor acc_norm | TITAN - Transformer++"))
    assert "| +0.000 |" in row and row.endswith("| 0/3 | tie |"), row
    row = next(l for l in paired.splitlines() if l.startswith("| val loss (nats/token) | HOPE - TITAN"))
    assert "| -0.208 |" in row and row.endswith("| 3/3 | better |"), row


def test_seed_plot_table_and_curves_averaged_over_seeds(seeded):
    with (seeded.root / "plots/data/seeds.csv").open() as f:
        rows = list(csv.DictReader(f))
    hope = [r for r in rows if r["metric"] == "val_loss" and r["series"] == "HOPE"]
    assert [(r["seed"], float(r["value"])) for r in hope] == [("0", 4.25), ("1", 4.375),
                                                                ("2", 4.5)]
    assert {float(r["mean"]) for r in hope} == {4.375}
    with (seeded.root / "plots/data/loss.csv").open() as f:
        loss = list(csv.DictReader(f))
    # Every seed logged the same train curve, so the mean equals it; one line per variant.
    assert [r for r in loss if r["series"] == "HOPE" and r["kind"] == "train"] == [
        {"step": "1", "series": "HOPE", "kind": "train", "loss": "5.5"},
        {"step": "2", "series": "HOPE", "kind": "train", "loss": "5.0"}]
    with (seeded.root / "plots/data/passkey.csv").open() as f:
        passkey = list(csv.DictReader(f))
    # HOPE's length-64 accuracy is 0.5 at seed 0 and 0 at seeds 1, 2: the mean is 1/6.
    assert float(next(r["acc"] for r in passkey if r["series"] == "HOPE"
                      and r["length"] == "64")) == pytest.approx(1 / 6)


def test_one_seed_says_no_interval_exists(project):  # noqa: F811
    for v, losses in VAL.items():
        write_variant(project.root, v, tps=[100.0], val_loss=losses[0], choice=0.5,
                      passkey=GRID_ZERO)
    project.write_params(smoke_params())
    assert project.run("stages.report").returncode == 0
    md = (project.root / "metrics/report.md").read_text()
    assert "One training seed (0): no interval exists" in md
    assert "none (1 seed)" in md and "± " not in md.split("## Seeds and intervals")[0]
    assert "| 1/1 | no interval |" in md

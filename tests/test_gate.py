"""The regression gate: rules judged against hand-computed moves, and the command against
a real `dvc metrics diff` in a scratch git + DVC repository (unchanged run passes, planted
regression fails with a table, bad revision is one line)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import smoke_params, stage_env
from nlrepro.report.config import GateRule
from nlrepro.report.gate import compare, find_rule, judge

LOWER = GateRule("lower", abs=0.02)
HIGHER_REL = GateRule("higher", rel=0.1)


@pytest.mark.parametrize("base, new, rule, status, worse", [
    (5.00, 5.03, LOWER, "REGRESSED", 0.03),     # 0.03 > 0.02
    (5.00, 5.02, LOWER, "ok", 0.02),            # exactly the allowance passes
    (5.00, 5.01, LOWER, "ok", 0.01),
    (5.00, 4.90, LOWER, "improved", -0.10),
    (0.50, 0.44, HIGHER_REL, "REGRESSED", 0.06),  # allowed 0.1 * 0.5 = 0.05
    (0.50, 0.46, HIGHER_REL, "ok", 0.04),
    (0.50, 0.70, HIGHER_REL, "improved", -0.20),
])
def test_judge_moves_against_the_allowance(base, new, rule, status, worse):
    v = judge("hope.m", base, new, rule)
    assert v.status == status
    assert v.worse_by == pytest.approx(worse)
    assert v.failed == (status == "REGRESSED")


def test_allowance_is_the_larger_of_abs_and_rel():
    rule = GateRule("lower", abs=0.05, rel=0.01)
    assert rule.allowed(2.0) == 0.05 and rule.allowed(100.0) == 1.0
    assert judge("k", 100.0, 100.9, rule).status == "ok"
    assert judge("k", 100.0, 101.1, rule).status == "REGRESSED"


def test_missing_non_finite_new_and_ungated_metrics():
    assert judge("hope.val_loss", 5.0, math.nan, LOWER).status == "NOT FINITE"
    assert judge("hope.val_loss", 5.0, math.inf, LOWER).failed
    assert judge("hope.val_loss", 5.0, None, LOWER).status == "MISSING"
    assert judge("hope.val_loss", None, 5.0, LOWER).status == "new"
    assert judge("hope.val_loss", math.nan, 5.0, LOWER).status == "new"
    assert judge("hope.tokens_per_s", 900.0, 1.0, None).status == "not gated"
    assert not judge("hope.tokens_per_s", 900.0, 1.0, None).failed


def test_rule_lookup_exact_before_patterns_in_order():
    rules = {"*acc*": GateRule("higher", abs=0.03), "choice_acc": GateRule("higher", abs=0.1),
             "hope.val_loss": GateRule("lower", abs=0.5), "val_loss": LOWER,
             "zs_*": GateRule("higher", abs=0.9)}
    assert find_rule("titan.choice_acc", rules).abs == 0.1        # exact name beats pattern
    assert find_rule("titan.zs_piqa_acc", rules).abs == 0.03      # first pattern that matches
    assert find_rule("hope.val_loss", rules).abs == 0.5           # full key beats the name
    assert find_rule("titan.val_loss", rules).abs == 0.02
    assert find_rule("titan.tokens_per_s", rules) is None


def test_compare_skips_chance_and_reads_dvc_diff_entries():
    diff = {"chance.choice_acc": {"old": 0.25, "new": 0.25},
            "hope.val_loss": {"old": 5.0, "new": 5.5, "diff": 0.5},
            "hope.train_seconds": {"old": 10.0, "new": 99.0, "diff": 89.0}}
    verdicts = compare(diff, {"val_loss": LOWER})
    assert [(v.key, v.status) for v in verdicts] == [("hope.train_seconds", "not gated"),
                                                     ("hope.val_loss", "REGRESSED")]


# --- the command against real DVC --------------------------------------------------------

SUMMARY = {"chance": {"choice_acc": 0.25, "val_loss": 6.2},
           "hope": {"val_loss": 5.10, "choice_acc": 0.44, "tokens_per_s": 1000.0},
           "transformer": {"val_loss": 5.15, "choice_acc": 0.35, "tokens_per_s": 4000.0}}


def one_seed(flat: dict) -> dict:
    """metrics/summary.json as the report writes it for one seed (seed 0)."""
    out = {v: {m: {"mean": x, "n": 1, "seed0": x} for m, x in metrics.items()}
           for v, metrics in flat.items() if v != "chance"}
    return {**out, "chance": flat["chance"], "seeds": {"n": 1}}


def sh(cwd, *cmd):
    return subprocess.run(cmd, cwd=cwd, env=stage_env(), capture_output=True, text=True,
                          timeout=300)


def git(cwd, *args):
    r = sh(cwd, "git", "-c", "user.email=t@t", "-c", "user.name=t", *args)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    git(root, "init", "-q")
    dvc = str(Path(sys.executable).parent / "dvc")
    assert sh(root, dvc, "init", "-q").returncode == 0
    params = smoke_params(gate={"rules": {"val_loss": {"better": "lower", "abs": 0.02},
                                          "*acc*": {"better": "higher", "abs": 0.03}}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text("metrics:\n- metrics/summary.json\n")
    (root / "metrics").mkdir()
    (root / "metrics/summary.json").write_text(json.dumps(one_seed(SUMMARY)))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "baseline")
    return root


def gate(root, *args):
    return sh(root, sys.executable, "-m", "nlrepro.report.gate", *args)


def write_summary(root, **changes):
    s = json.loads(json.dumps(SUMMARY))
    for key, value in changes.items():
        variant, metric = key.split("__")
        s[variant][metric] = value
    (root / "metrics/summary.json").write_text(json.dumps(one_seed(s)))


def test_unchanged_run_passes(repo):
    write_summary(repo)
    r = gate(repo)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "gate: metrics/summary.json, workspace against HEAD: 4 gated metrics (4 unchanged), "
        "3 not gated (--all lists every metric)", "gate passed"]


def test_planted_regression_fails_with_a_table(repo):
    write_summary(repo, hope__val_loss=5.20, transformer__choice_acc=0.36,
                  hope__tokens_per_s=10.0)                 # timing: never gated
    r = gate(repo, "--baseline", "HEAD")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["metric", "baseline", "current", "worse", "by", "seeds", "rule",
                                "status"]
    row = next(l for l in lines if l.startswith("hope.val_loss"))
    assert row.split()[1:4] == ["5.1", "5.2", "0.1"] and row.endswith("REGRESSED")
    assert next(l for l in lines if l.startswith("transformer.choice_acc")).endswith("improved")
    assert lines[-1] == "gate FAILED: 1 metric(s) past their threshold: hope.val_loss"
    # Unchanged gated metrics and ungated timings are left out unless --all.
    assert not any(l.startswith(("hope.tokens_per_s", "hope.choice_acc")) for l in lines)
    every = gate(repo, "--all").stdout
    assert "hope.tokens_per_s" in every and "hope.choice_acc" in every


def test_a_metric_within_threshold_and_a_nan(repo):
    write_summary(repo, hope__choice_acc=0.42)           # 0.02 worse, 0.03 allowed
    assert gate(repo).returncode == 0
    write_summary(repo, hope__val_loss=float("nan"))
    r = gate(repo, "--md")
    assert r.returncode == 1
    assert "| hope.val_loss | 5.1 | nan | - | 1/1 | lower is better | NOT FINITE |" in r.stdout


def test_bad_revision_and_missing_file_are_one_line(repo):
    write_summary(repo)
    r = gate(repo, "--baseline", "no-such-rev")
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: gate: dvc metrics diff no-such-rev: "
                                "unknown Git revision 'no-such-rev'")
    (repo / "metrics/summary.json").unlink()
    try:
        r = gate(repo)
        assert r.returncode == 2
        assert r.stderr.strip() == ("error: gate: metrics/summary.json: not in the workspace "
                                    "(run `dvc repro report`)")
    finally:
        write_summary(repo)


# --- several seeds on both sides: scaled allowance and a one-sided Welch t-test ----------

def t_cdf_4(t: float) -> float:
    """CDF of Student's t with 4 degrees of freedom, in closed form (an independent check
    of SciPy): 1/2 + 3/8 x (1 - x^2/12 ... ) with x = t / sqrt(1 + t^2/4)."""
    u = 1 + t * t / 4
    return 0.5 + 0.375 * (t / math.sqrt(u)) * (1 - t * t / (12 * u))


SEED_RULE = GateRule("lower", abs=0.06)
BASE3 = (5.00, 5.02, 5.04)                 # mean 5.02, sd 0.02


def test_several_seeds_scale_the_allowance_and_need_a_significant_move():
    cur = tuple(x + 0.10 for x in BASE3)   # every seed 0.10 worse, same spread
    v = judge("hope.val_loss", 5.02, 5.12, SEED_RULE, BASE3, cur)
    # allowance 0.06 * sqrt((1/3 + 1/3) / 2); Welch: se = sqrt(2 * 0.02^2 / 3), df = 4
    assert v.allowed == pytest.approx(0.06 / math.sqrt(3))
    t = 0.10 / math.sqrt(2 * 0.02 ** 2 / 3)
    assert v.p_value == pytest.approx(1 - t_cdf_4(t), rel=1e-6)
    assert v.seeds == (3, 3) and v.status == "REGRESSED"
    # The same mean shift with seeds spread six times wider is not significant: ok.
    wide_b, wide_c = (4.90, 5.02, 5.14), (5.00, 5.12, 5.24)
    v = judge("hope.val_loss", 5.02, 5.12, SEED_RULE, wide_b, wide_c)
    t = 0.10 / math.sqrt(2 * 0.12 ** 2 / 3)
    assert v.p_value == pytest.approx(1 - t_cdf_4(t), rel=1e-6) and v.p_value > 0.05
    assert v.status == "ok"
    # Significant but inside the scaled allowance (0.0346): ok.
    tight = (5.01, 5.02, 5.03)
    v = judge("hope.val_loss", 5.02, 5.05, SEED_RULE, tight, tuple(x + 0.03 for x in tight))
    assert v.p_value < 0.05 and v.status == "ok"


def test_several_seeds_edge_cases():
    # A deterministic rerun (no spread on either side): a move past the allowance fails.
    v = judge("hope.val_loss", 5.0, 5.1, SEED_RULE, (5.0, 5.0), (5.1, 5.1))
    assert v.p_value == 0.0 and v.status == "REGRESSED"
    assert judge("hope.val_loss", 5.0, 5.0, SEED_RULE, (5.0, 5.0), (5.0, 5.0)).status == "ok"
    # One seed on one side: the plain allowance, no test.
    v = judge("hope.val_loss", 5.0, 5.05, SEED_RULE, (), (5.0, 5.05, 5.1))
    assert v.allowed == 0.06 and v.p_value is None and v.status == "ok"
    # Higher is better: the test looks the other way.
    acc = GateRule("higher", abs=0.03)
    v = judge("hope.choice_acc", 0.5, 0.4, acc, (0.49, 0.5, 0.51), (0.39, 0.4, 0.41))
    assert v.status == "REGRESSED" and v.p_value < 0.01
    assert judge("hope.choice_acc", 0.4, 0.5, acc, (0.39, 0.4, 0.41),
                 (0.49, 0.5, 0.51)).status == "improved"


def test_compare_reads_the_seeded_summary_and_an_old_flat_baseline():
    diff = {"hope.val_loss.mean": {"old": 5.02, "new": 5.12},
            "hope.val_loss.std": {"old": 0.02, "new": 0.02},
            "hope.val_loss.n": {"old": 3, "new": 3},
            **{f"hope.val_loss.seed{k}": {"old": b, "new": b + 0.1} for k, b in enumerate(BASE3)},
            # written before seeds were an axis on the baseline side
            "titan.val_loss": {"old": 5.2},
            "titan.val_loss.mean": {"new": 5.21},
            "titan.val_loss.seed0": {"new": 5.21},
            "paired.hope-transformer.val_loss.mean": {"old": -0.1, "new": 0.3},
            "seeds.n": {"old": 3, "new": 3},
            "chance.val_loss": {"old": 8.3, "new": 8.3}}
    verdicts = {v.key: v for v in compare(diff, {"val_loss": SEED_RULE})}
    assert set(verdicts) == {"hope.val_loss", "titan.val_loss", "paired.hope-transformer.val_loss.mean",
                             "seeds.n"}
    assert verdicts["hope.val_loss"].seeds == (3, 3)
    assert verdicts["hope.val_loss"].status == "REGRESSED"
    titan = verdicts["titan.val_loss"]
    assert (titan.baseline, titan.current, titan.seeds, titan.status) == (5.2, 5.21, (1, 1), "ok")
    assert verdicts["paired.hope-transformer.val_loss.mean"].status == "not gated"

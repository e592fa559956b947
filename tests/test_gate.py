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
    (root / "metrics/summary.json").write_text(json.dumps(SUMMARY))
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
    (root / "metrics/summary.json").write_text(json.dumps(s))


def test_unchanged_run_passes(repo):
    write_summary(repo)
    r = gate(repo)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "gate: metrics/summary.json, workspace against HEAD: 4 gated metrics (4 unchanged), "
        "2 not gated (--all lists every metric)", "gate passed"]


def test_planted_regression_fails_with_a_table(repo):
    write_summary(repo, hope__val_loss=5.20, transformer__choice_acc=0.36,
                  hope__tokens_per_s=10.0)                 # timing: never gated
    r = gate(repo, "--baseline", "HEAD")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["metric", "baseline", "current", "worse", "by", "rule", "status"]
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
    assert "| hope.val_loss | 5.1 | nan | - | lower is better | NOT FINITE |" in r.stdout


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

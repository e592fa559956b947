"""The default gate rules of params.yaml against real runs of the default pipeline.

tests/data/gate/ holds metrics/summary.json of real `dvc repro` runs at the default
scale (docs/REPORT.md, "Noise"; how each was made is in its README):

* ``seed0`` / ``seed1`` / ``seed2``: the defaults with train.seeds [0], [1], [2];
* ``seed0_avx2``: seed 0 again on another CPU code path (ATen's AVX2 kernels instead of
  AVX-512, which rounds softmax and SiLU differently), standing in for another x86 CPU;
* ``seeds012``: the three seeds in one summary;
* ``steps_halved``: seed 0 with train.steps 100 instead of 200;
* ``updates_off`` / ``updates_off012``: teach_scale 0 (every in-context update off) at
  seed 0 / at seeds 0, 1, 2.

The rules must let every rerun through (another seed, another CPU), cover the measured
noise, and still fail both planted regressions.
"""
from __future__ import annotations

import itertools
import json
import math

import pytest
import yaml

from conftest import REPO
from nlrepro.configlib import parse
from nlrepro.report.config import GateConfig
from nlrepro.report.gate import compare
from nlrepro.report.noise import noise_table

DATA = REPO / "tests/data/gate"
RERUNS = ["seed0", "seed1", "seed2", "seed0_avx2"]


def summary(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def flatten(d: dict, prefix: str = "") -> dict[str, float]:
    """Numbers of a summary under dotted keys, as `dvc metrics diff` names them."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def diff(old: dict, new: dict) -> dict[str, dict]:
    a, b = flatten(old), flatten(new)
    return {k: {"old": a.get(k), "new": b.get(k)} for k in sorted(set(a) | set(b))}


@pytest.fixture(scope="module")
def gate() -> GateConfig:
    return parse(GateConfig, yaml.safe_load((REPO / "params.yaml").read_text())["gate"], "gate")


def failures(gate: GateConfig, old: str, new: str) -> list[str]:
    return [v.key for v in compare(diff(summary(old), summary(new)), gate.rules, gate.alpha)
            if v.failed]


@pytest.mark.parametrize("old, new", list(itertools.permutations(RERUNS, 2)))
def test_a_rerun_with_another_seed_or_cpu_passes(gate, old, new):
    assert failures(gate, old, new) == []


def test_rules_cover_the_measured_seed_and_machine_noise(gate):
    rows = noise_table(summary("seeds012"), [(summary("seed0"), summary("seed0_avx2"))],
                       gate.rules)
    assert len(rows) > 30                       # every gated metric of three variants
    # The in-context gain's rule is deliberately tighter than its seed spread (it checks
    # that the gain did not vanish; docs/REPORT.md): every other rule covers the noise.
    assert [r["metric"] for r in rows if not r["covered"]] == ["hope.icl_gain",
                                                                "titan.icl_gain"]


def test_halving_the_training_steps_fails(gate):
    failed = failures(gate, "seed0", "steps_halved")
    assert {"hope.val_loss", "titan.val_loss", "transformer.val_loss"} <= set(failed)


def test_turning_the_in_context_updates_off_fails(gate):
    failed = failures(gate, "seed0", "updates_off")
    assert "hope.icl_gain" in failed
    assert not [k for k in failed if k.startswith("transformer.")]   # it has no updates


def test_three_seeds_with_the_updates_off_fail_on_val_loss_by_welch(gate):
    verdicts = {v.key: v for v in compare(diff(summary("seeds012"), summary("updates_off012")),
                                          gate.rules, gate.alpha)}
    hope = verdicts["hope.val_loss"]
    assert hope.seeds == (3, 3) and hope.failed and hope.p_value < gate.alpha
    assert not [k for k, v in verdicts.items() if v.failed and k.startswith("transformer.")]


def test_three_seeds_against_themselves_pass_and_a_shifted_copy_fails(gate):
    base = summary("seeds012")
    assert failures(gate, "seeds012", "seeds012") == []
    worse = json.loads(json.dumps(base))
    stat = worse["hope"]["val_loss"]
    for key in [k for k in stat if k.startswith("seed")] + ["mean"]:
        stat[key] += 0.3                       # every seed 0.3 nats worse
    verdicts = {v.key: v for v in compare(diff(base, worse), gate.rules, gate.alpha)}
    v = verdicts["hope.val_loss"]
    assert v.seeds == (3, 3) and v.p_value is not None and v.p_value < gate.alpha
    assert v.failed and math.isclose(v.worse_by, 0.3, abs_tol=1e-9)

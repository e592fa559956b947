"""dvc.yaml's train stage lists every training key but the two that name the matrix
(train.variants, train.seeds): adding a seed or a variant must not rerun the other runs,
and a training key left out would let DVC serve a stale model."""
from __future__ import annotations

import dataclasses

import yaml

from conftest import REPO
from nlrepro.train.config import TrainConfig

MATRIX_KEYS = {"variants", "seeds"}


def stage(name: str) -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]


def test_train_stage_params_are_every_train_key_but_the_matrix():
    listed = {p for p in stage("train")["params"] if isinstance(p, str)}
    train_keys = {p.split(".", 1)[1] for p in listed if p.startswith("train.")}
    assert "train" not in listed, "the whole train section would rerun every seed on a new one"
    assert train_keys == {f.name for f in dataclasses.fields(TrainConfig)} - MATRIX_KEYS
    assert {"teach_scale", "teach_clip", "teach", "clip", "model"} <= listed


def test_train_and_evaluate_are_one_stage_per_variant_and_seed():
    for name in ("train", "evaluate"):
        st = stage(name)
        assert st["matrix"] == {"variant": "${train.variants}", "seed": "${train.seeds}"}
        assert st["cmd"].endswith("${item.variant} --seed ${item.seed}")
    assert "models/${item.variant}-s${item.seed}.pt" in stage("train")["outs"]
    assert "models/${item.variant}-s${item.seed}.pt" in stage("evaluate")["deps"]
    assert {"train.variants", "train.seeds"} <= set(stage("report")["params"])

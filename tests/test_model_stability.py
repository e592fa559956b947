"""Stable by construction: with every clip off and the teach scale at 1.0, the fast
weights of a random-init HOPE (self-modifying projections, main memory, CMS) and of the
TITAN memory stay within 2x of their start over a 16K-token stream of real text
(Shakespeare from the embedded corpus, as bytes), and nothing goes non-finite. The plain
reading of the self-modifying rule (``selfmod.rule: plain``) does not, either way: at the
old gate initialisation its projections decay to the absorbing P = 0, with a larger step
they blow up."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nlrepro.data.shakespeare import iter_documents
from nlrepro.eval.icl import stream_stability
from nlrepro.model.config import InContextConfig
from nlrepro.model.lm import build_model
from nlrepro.model.presets import preset_config

STREAM = 16384
NO_GUARDS = InContextConfig(residual_clip=None, inner_clip=None, teach_clip=None)


@pytest.fixture(scope="module")
def text_stream() -> np.ndarray:
    data = b""
    for _, text in iter_documents("scene"):
        data += text.encode("utf-8") + b"\0"
        if len(data) >= STREAM:
            break
    return np.frombuffer(data[:STREAM], dtype=np.uint8).astype(np.int64)


def stream_report(variant: str, stream: np.ndarray, **overrides) -> dict:
    torch.manual_seed(0)
    model = build_model(preset_config("tiny", variant, **overrides), 256, NO_GUARDS)
    return stream_stability(model.eval(), stream, teach_scale=1.0, stream_chunk=256)


@pytest.mark.parametrize("variant", ["hope", "titan"])
def test_fast_weights_stay_within_2x_over_16k_tokens_without_clips(variant, text_stream):
    report = stream_report(variant, text_stream)
    assert report["finite"]
    assert report["tokens"] == STREAM
    names = set(report["norms"])
    expected = {"memory"} | ({"selfmod", "cms0", "cms1", "cms2"} if variant == "hope" else set())
    assert {name.split(".")[1] for name in names} == expected
    for name, norm in report["norms"].items():
        assert 0.5 <= norm["min_ratio"] and norm["max_ratio"] <= 2.0, (name, norm)


def test_the_plain_rule_collapses_or_diverges_on_the_same_stream(text_stream):
    collapsed = stream_report("hope", text_stream, selfmod={"rule": "plain"}, memory={"step_init": 0.0067})
    assert collapsed["finite"] and collapsed["min_ratio"] < 1e-6
    diverged = stream_report("hope", text_stream, selfmod={"rule": "plain"}, memory={"step_init": 0.05})
    assert not diverged["finite"]

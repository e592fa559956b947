"""The long-context study's library pieces (issue 13, docs/LONG_CONTEXT.md): retrieval
documents of exact token distance, training rows mixed with the corpus, the evaluation
grid with Wilson intervals, the key log-likelihood, the trace, and streaming to 16K
tokens in bounded memory."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval_helpers import CopyingLM, tiny_tokenizer
from nlrepro.data import retrieval as R
from nlrepro.eval import retrieval as E
from nlrepro.eval.scorer import ModelScorer
from nlrepro.model.lm import build_model
from nlrepro.model.presets import model_config


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def enc(tok):
    return lambda s: tok.encode(s, add_special_tokens=False).ids


# --- intervals -------------------------------------------------------------------------

def test_wilson_matches_hand_computation():
    # 0/10: centre = (z^2/20) / (1 + z^2/10), half the same -> upper 2 * 0.13877
    lo, hi = E.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.277533, abs=1e-6)
    lo, hi = E.wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.236593, abs=1e-6), pytest.approx(0.763407, abs=1e-6))
    assert E.wilson(10, 10) == (pytest.approx(0.722467, abs=1e-6), 1.0)
    # the grid's sample sizes: 32 probes bound a zero score below 0.11, 93 give +-0.1 anywhere
    assert E.wilson(0, 32)[1] == pytest.approx(0.107179, abs=1e-6)
    assert E.samples_for_halfwidth(0.1) == 93


@pytest.mark.parametrize("k, n", [(3, 2), (-1, 5), (0, 0)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(ValueError):
        E.wilson(k, n)


# --- documents of exact distance -------------------------------------------------------

def test_passkey_doc_has_the_exact_distance_prefix_and_answer(tok, enc):
    rng = np.random.default_rng(3)
    doc = R.passkey_doc(enc, rng, 100, 37)
    head = len(enc(R.INTRO))
    assert doc.distance == 100 and doc.fact_pos == head + 37
    assert doc.ids[:head] == enc(R.INTRO)
    needle_ids = enc(R.needle(doc.answer.strip()))
    assert doc.ids[doc.fact_pos:doc.fact_pos + len(needle_ids)] == needle_ids
    assert doc.ids[doc.answer_pos - len(enc(R.QUESTION)):doc.answer_pos] == enc(R.QUESTION)
    assert doc.ids[doc.answer_pos:] == enc(doc.answer) + enc(".")
    assert doc.answer[0] == " " and doc.answer[1:].isdigit() and len(doc.answer) == 6
    # the same generator state gives the same document
    again = R.passkey_doc(enc, np.random.default_rng(3), 100, 37)
    assert again == doc


def test_kv_doc_asks_for_a_record_at_the_exact_distance(tok, enc):
    doc = R.kv_doc(enc, np.random.default_rng(5), 90, 4)
    assert doc.distance == 90
    text = tok.decode(doc.ids[doc.fact_pos:doc.answer_pos]).strip()
    name = text.split(" is ")[0].split("The value of ")[1]
    assert text.startswith(f"The value of {name} is {doc.answer.strip()}.")
    assert tok.decode(doc.ids[:doc.answer_pos]).endswith(f"the value of {name} is")


def test_too_short_distances_and_budgets_are_refused(enc):
    with pytest.raises(ValueError, match="shorter than the needle"):
        R.passkey_doc(enc, np.random.default_rng(0), 10, 0)
    with pytest.raises(ValueError, match="shorter than the records"):
        R.kv_doc(enc, np.random.default_rng(0), 10, 4)
    with pytest.raises(ValueError):
        R.filler_tokens(enc, np.random.default_rng(0), -1)
    with pytest.raises(ValueError):
        R.log_uniform_distance(np.random.default_rng(0), 10, 5)


def test_filler_is_exactly_the_budget(enc):
    for budget in (0, 1, 7, 50, 333):
        body, bounds = R.filler_tokens(enc, np.random.default_rng(budget), budget)
        assert len(body) == budget and bounds[0] == 0 and bounds[-1] == budget


def test_retrieval_rows_are_exact_deterministic_and_answerable(tok, enc):
    corpus = np.arange(5000) % tok.get_vocab_size()
    row, docs = R.retrieval_row(enc, np.random.default_rng((0, 1)), 257, 0, corpus,
                                (32, 200), ("passkey", "kv"), 4)
    again, docs2 = R.retrieval_row(enc, np.random.default_rng((0, 1)), 257, 0, corpus,
                                   (32, 200), ("passkey", "kv"), 4)
    assert row.shape == (257,) and np.array_equal(row, again) and docs == docs2
    assert docs, "at least one document fits a 257-token row"
    for d in docs:
        assert 32 <= d["distance"] <= 200
        # the answer sits at answer_pos, a number followed by "."
        text = tok.decode(row[d["answer_pos"]:d["answer_pos"] + 6].tolist())
        assert text[:1] == " " and text[1:5].isdigit()
    # the row ends in corpus tokens after the last document's end-of-text
    last_eos = max(i for i, t in enumerate(row.tolist()) if t == 0)
    tail = row[last_eos + 1:]
    if len(tail):
        start = int(np.flatnonzero(corpus == tail[0])[0])
        assert np.array_equal(tail, corpus[start:start + len(tail)])
    with pytest.raises(ValueError, match="shorter than a row"):
        R.retrieval_row(enc, np.random.default_rng(0), 257, 0, corpus[:10], (32, 40), ("passkey",), 4)


# --- the grid --------------------------------------------------------------------------

def test_probes_have_exact_distance_depth_and_equal_lengths_per_cell(enc):
    probes = E.build_probes(enc, [32, 64, 128], [0.0, 0.5], 3, seed=0)
    assert len(probes) == 3 * 2 * 3
    for p in probes:
        assert p.doc.distance == p.distance
        gap = p.distance - len(enc(R.needle(p.doc.answer.strip()))) - len(enc(R.QUESTION))
        prefix = p.doc.fact_pos - len(enc(R.INTRO))
        assert prefix == R.prefix_for(p.depth, gap)
        if gap:
            assert abs(prefix / (prefix + gap) - p.depth) <= 0.5 / gap
        assert len(p.prompt) == len(enc(R.INTRO)) + prefix + p.distance
    assert [p.doc.ids for p in E.build_probes(enc, [64], [0.5], 2, seed=0)] == \
        [p.doc.ids for p in probes if p.distance == 64 and p.depth == 0.5][:2]
    assert len({p.doc.answer for p in probes}) > 10      # keys differ between probes
    with pytest.raises(ValueError):
        R.prefix_for(1.0, 10)


def test_a_perfect_copier_retrieves_everything_and_a_shifted_one_nothing(tok):
    probes = E.build_probes(lambda s: tok.encode(s, add_special_tokens=False).ids,
                            [40, 120], [0.0, 0.25], 2, seed=1)
    vocab = tok.get_vocab_size()
    for shift, expected in ((0, 1.0), (1, 0.0)):
        scorer = ModelScorer(CopyingLM(vocab, k=3, shift=shift), tok, 1.0, max_len=10**6,
                             batch_size=4, stream_chunk=50)
        records = E.evaluate_probes(scorer, probes)
        assert len(records) == 8
        m = E.grid_metrics(records, window=64)
        assert m["acc"] == expected
        assert m["acc_by_distance"]["40"]["n"] == 4
        if expected:
            assert all(r["is_greedy"] and r["loglik"] > -1.0 for r in records)
            assert m["max_distance_above_chance"] == 120
        else:
            assert m["max_distance_above_chance"] is None


def test_grid_metrics_by_hand():
    recs = ([{"distance": 32, "depth": 0.0, "correct": True, "loglik": -1.0}] * 3
            + [{"distance": 32, "depth": 0.5, "correct": False, "loglik": -3.0}]
            + [{"distance": 256, "depth": 0.0, "correct": False, "loglik": -10.0}] * 2)
    m = E.grid_metrics(recs, window=64)
    assert m["acc"] == 0.5 and m["n"] == 6
    d32 = m["acc_by_distance"]["32"]
    assert (d32["k"], d32["n"], d32["acc"]) == (3, 4, 0.75)
    assert (d32["lo"], d32["hi"]) == pytest.approx(E.wilson(3, 4))
    assert m["acc_grid"]["32"]["0.0"]["acc"] == 1.0 and m["acc_grid"]["32"]["0.5"]["acc"] == 0.0
    ll = m["key_loglik_by_distance"]["32"]
    assert ll["mean"] == -1.5 and ll["se"] == pytest.approx(1.0 / 2)   # sd 1, n 4
    assert m["key_loglik_by_distance"]["256"] == {"mean": -10.0, "se": 0.0, "n": 2}
    assert m["acc_at_4w"] == 0.0 and m["acc_at_16w"] is None
    assert m["max_distance_above_chance"] == 32
    with pytest.raises(ValueError):
        E.grid_metrics([], 64)


# --- trace and bounded streaming -------------------------------------------------------

def _model(variant, window=16, attention="swa", chunk=32):
    cfg = model_config({"preset": "tiny", "type": variant, "d_model": 32, "n_layers": 2,
                        "n_heads": 2, "mlp_width": 64, "attention": attention, "window": window,
                        "memory": {"chunk": chunk}, "selfmod": {"chunk": chunk},
                        "cms": {"levels": [{"chunk": chunk, "width": 16}, {"chunk": 2 * chunk, "width": 16}]}})
    torch.manual_seed(0)
    return build_model(cfg, 400).eval()


def test_trace_reports_update_norms_and_gates_per_chunk():
    model = _model("titan")
    ids = list(range(1, 129))
    rows = E.trace_haystack(model, ids, 1.0, 32)
    assert [r["pos"] for r in rows] == [32, 64, 96, 128]
    assert all(r["update_norm/memory"] > 0 for r in rows)
    assert all(0 < r[f"gate/layer{i}"] < 1 for r in rows for i in (0, 1))
    off = E.trace_haystack(model, ids, 0.0, 32)
    assert all("update_norm/memory" not in r or r["update_norm/memory"] == 0 for r in off)
    assert [r["gate/layer0"] for r in E.trace_haystack(model, ids, 1.0, 32)] == \
        [r["gate/layer0"] for r in rows]       # deterministic
    assert all(not k.startswith("gate/") for r in E.trace_haystack(_model("transformer"), ids, 1.0, 32)
               for k in r)


def _state_bytes_along(model, length, chunk):
    sizes = []
    scorer_state = model.initial_state()
    x = torch.randint(1, 400, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for start in range(0, length, chunk):
            scorer_state = model(x[:, start:start + chunk], state=scorer_state).state
            sizes.append(E.state_bytes(scorer_state))
    return sizes


@pytest.mark.parametrize("variant", ["transformer", "titan", "hope"])
def test_a_16k_passkey_evaluation_streams_in_bounded_memory(variant, tok):
    """The carried state (window-bounded attention cache, fixed-size memory) stops growing
    once the window is full: 16K tokens hold exactly what 1K tokens hold; the scorer keeps
    only the last logits of the prompt. Full attention, the control, grows."""
    model = _model(variant)
    sizes = _state_bytes_along(model, 16384, 1024)
    assert sizes[-1] == sizes[0] == max(sizes)
    full = _state_bytes_along(_model(variant, attention="full"), 4096, 1024)
    assert full[-1] > 3 * full[0]
    # the real evaluation path (stream, greedy decode, teacher-forced key score) at 4K and
    # 16K: the largest state it ever holds is the same (both stream full 2048-token calls,
    # whose last step leaves a full base chunk of logits pending for hope's teach signal)
    peaks = {}
    for length in (4096, 16384):
        probe = E.build_probes(lambda s: tok.encode(s, add_special_tokens=False).ids,
                               [length - 20], [0.0], 1, seed=0)[0]
        assert len(probe.prompt) >= length - 20
        scorer = ModelScorer(model, tok, 1.0, max_len=10**9, batch_size=1, stream_chunk=2048)
        seen = []
        forward = model.forward

        def spy(tokens, state=None, teach_scale=1.0):
            out = forward(tokens, state=state, teach_scale=teach_scale)
            seen.append(E.state_bytes(out.state))
            assert out.logits.shape[1] <= 2048      # never the whole prompt's logits
            return out
        model.forward = spy
        try:
            records = E.evaluate_probes(scorer, [probe])
        finally:
            del model.forward
        assert len(records) == 1 and isinstance(records[0]["correct"], bool)
        assert math.isfinite(records[0]["loglik"])
        peaks[length] = max(seen)
    assert peaks[16384] == peaks[4096]


def test_repeat_doc_copies_its_numbers_from_the_distance_back(tok, enc):
    doc = R.repeat_doc(enc, np.random.default_rng(2), 60)
    body = doc.ids[doc.fact_pos:doc.answer_pos - len(enc(R.REPEAT_AGAIN))]
    assert doc.ids[doc.answer_pos:] == body                    # the second copy is the first
    assert doc.distance == len(body) + len(enc(R.REPEAT_AGAIN)) >= 60
    assert tok.decode(body).strip() == doc.answer.strip() + "."
    assert all(len(n) == 5 and n.isdigit() for n in doc.answer.split())
    row, docs = R.retrieval_row(enc, np.random.default_rng(4), 257, 0, np.arange(3000) % 300 + 1,
                                (32, 120), ("repeat",), 4)
    assert docs and all(d["kind"] == "repeat" for d in docs) and row.shape == (257,)


def test_the_streaming_scorer_keeps_no_piece_of_the_prompt_logits(tok):
    """A streamed prompt's last logits own only their own storage (B x 1 x V): a view of
    them would keep each piece's whole logits alive, so memory would grow with the length."""
    model = _model("titan")
    x = torch.randint(1, 400, (2, 3000), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        last, state = ModelScorer(model, tok, 1.0, 10**9, stream_chunk=512).stream(x, last_only=True)
        ref, _ = ModelScorer(model, tok, 1.0, 10**9, stream_chunk=3000).stream(x, last_only=True)
    assert last.shape == (2, 1, 400)
    assert last.untyped_storage().nbytes() == last.numel() * last.element_size()
    assert torch.allclose(last, ref, atol=1e-5)       # the same numbers as one call
    assert state.pos == 3000

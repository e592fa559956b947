"""The offline suite: passages cut from the held-out split as intended, passkey haystacks of
exact token length with the needle where asked, and a retrieval score that rewards exact
retrieval and nothing else."""
from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

from eval_helpers import CopyingLM, corpus_docs, tiny_tokenizer, write_test_split
from nlrepro.data.synthetic import filler
from nlrepro.errors import NLReproError
from nlrepro.eval.config import ChoiceConfig, LastWordConfig, PasskeyConfig, PerplexityConfig
from nlrepro.eval.offline import (
    Document,
    choice_examples,
    evaluate_perplexity,
    heldout_documents,
    last_word_examples,
    round_robin,
)
from nlrepro.eval.passkey import (
    INTRO,
    QUESTION,
    build_haystacks,
    evaluate_passkey,
    is_exact_retrieval,
    needle,
)
from nlrepro.eval.scorer import ModelScorer



@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def docs():
    return [Document(*d) for d in corpus_docs()]


def encoder(tok):
    return lambda s: tok.encode(s, add_special_tokens=False).ids


# --- held-out passages ---------------------------------------------------------------------

def test_heldout_documents_read_the_test_split_and_filter_by_source(tmp_path):
    write_test_split(tmp_path, corpus_docs())
    docs = heldout_documents(tmp_path / "data" / "shards")
    assert [d.doc_id for d in docs] == [d[0] for d in corpus_docs()]
    only = heldout_documents(tmp_path / "data" / "shards", ["synthetic"])
    assert only and {d.source for d in only} == {"synthetic"}
    with pytest.raises(NLReproError, match="no test documents of source 'web'"):
        heldout_documents(tmp_path / "data" / "shards", ["web"])
    with pytest.raises(NLReproError, match="manifest.json: not found"):
        heldout_documents(tmp_path / "nowhere")


def test_round_robin_alternates_sources_in_a_seeded_order(docs):
    order = round_robin(docs, np.random.default_rng(0))
    assert sorted(d.doc_id for d in order) == sorted(d.doc_id for d in docs)
    assert [d.source for d in order[:8]] == ["shakespeare", "synthetic"] * 4
    assert order == round_robin(docs, np.random.default_rng(0))


def test_last_word_splits_a_passage_before_its_last_word(docs):
    cfg = LastWordConfig(samples=30, context_chars=120, min_word_chars=3)
    examples = last_word_examples(docs, cfg, seed=0)
    assert len(examples) == 30
    assert len({(d.doc_id, ex.context) for d, ex in examples}) == 30
    for doc, ex in examples:
        word = ex.target[1:]
        assert ex.target == " " + word and re.fullmatch(r"[A-Za-z]{3,}", word)
        passage = ex.context + ex.target
        at = doc.text.index(passage)
        after = doc.text[at + len(passage):at + len(passage) + 1]
        assert after == "" or re.match(r"[\s.,;:!?]", after)   # the word ends there
        assert len(ex.context) <= 120 and ex.context[:1].strip()  # starts at a word
    assert {d.source for d, _ in examples} == {"shakespeare", "synthetic"}


def test_choice_distractors_come_from_other_documents_and_never_equal_the_real_one(docs):
    cfg = ChoiceConfig(samples=24, num_choices=4, context_chars=100, continuation_words=6)
    examples = choice_examples(docs, cfg, seed=0)
    assert len(examples) == 24
    golds = set()
    for doc, ex in examples:
        real = ex.choices[ex.gold]
        golds.add(ex.gold)
        assert (ex.requests[ex.gold][0] + " " + real) in doc.text      # the true continuation
        assert len(set(ex.choices)) == 4 and real not in ex.choices[:ex.gold] + ex.choices[ex.gold + 1:]
        assert all(len(c.split()) == 6 for c in ex.choices)
        assert all(r == (ex.requests[0][0], " " + c) for r, c in zip(ex.requests, ex.choices))
        same_source = [d for d in docs if d.source == doc.source and d.doc_id != doc.doc_id]
        for i, c in enumerate(ex.choices):
            if i != ex.gold:
                assert any(c in d.text for d in same_source)
    assert len(golds) > 1  # the gold position is shuffled


def test_perplexity_pools_log_likelihood_over_tokens_and_bytes(docs, tok):
    per_token = -2.0

    class FlatScorer:  # every token costs exactly 2 nats
        vocab_size = 400
        encode = staticmethod(encoder(tok))

        def loglikelihood_rolling(self, texts):
            return [per_token * len(self.encode(t)) for t in texts]

    metrics, records, _ = evaluate_perplexity(FlatScorer(), docs, PerplexityConfig(docs=5, max_chars=200), 0)
    tokens, n_bytes = sum(r["tokens"] for r in records), sum(r["bytes"] for r in records)
    assert len(records) == 5 and all(len(r["text"]) <= 200 for r in records)
    assert metrics["token_perplexity"] == pytest.approx(math.exp(2.0))
    assert metrics["byte_perplexity"] == pytest.approx(math.exp(2.0 * tokens / n_bytes))
    assert metrics["bits_per_byte"] == pytest.approx(2.0 * tokens / n_bytes / math.log(2))
    assert metrics["chance"]["token_perplexity"] == 400
    assert set(metrics["token_perplexity_by_source"]) == {"shakespeare", "synthetic"}


# --- passkey -----------------------------------------------------------------------------

PASSKEY = PasskeyConfig(lengths=(64, 128, 200), depths=(0.0, 0.25, 0.5, 0.75, 1.0), samples=2)


def test_haystacks_have_the_exact_token_length_and_are_the_tokenizers_own_encoding(tok):
    encode = encoder(tok)
    haystacks = build_haystacks(encode, PASSKEY, seed=0)
    assert len(haystacks) == 3 * 5 * 2 and len({h.key for h in haystacks}) > 20
    for h in haystacks:
        assert len(h.ids) == h.length
        text = tok.decode(h.ids, skip_special_tokens=False)
        assert encode(text) == h.ids                       # what the model sees is canonical
        assert text.startswith(INTRO) and text.endswith(QUESTION)
        assert text.count(h.key) == 2 and needle(h.key) in text
        assert re.fullmatch(r"\d{5}", h.key)


def test_the_needle_sits_at_the_requested_depth(tok):
    encode = encoder(tok)
    fixed = len(encode(INTRO)), len(encode(QUESTION))
    rng = np.random.default_rng(0)
    longest = max(len(encode(" " + filler(rng, 1))) for _ in range(200))  # filler sentence
    for h in build_haystacks(encode, PASSKEY, seed=0):
        mid = len(encode(needle(h.key)))
        budget = h.length - fixed[0] - fixed[1] - mid
        assert h.ids[h.needle_pos:h.needle_pos + mid] == encode(needle(h.key))
        offset = h.needle_pos - fixed[0]
        assert abs(offset - h.depth * budget) <= longest / 2   # the nearest sentence end
        if h.depth == 0.0:
            assert offset == 0
        if h.depth == 1.0:
            assert h.needle_pos + mid == h.length - fixed[1]


def test_a_prompt_too_short_for_the_needle_is_a_clear_error(tok):
    with pytest.raises(NLReproError, match="eval.passkey.lengths: 20 tokens cannot hold"):
        build_haystacks(encoder(tok), PasskeyConfig(lengths=(20,), depths=(0.5,)), 0)


@pytest.mark.parametrize("generated, correct", [
    (" 48213.", True), (" 48213", True), (" 48213\n", True), (" 48213 is", True),
    (" 48214.", False), (" 482130", False), ("48213.", False), (" 4821", False),
    (" 48213".replace("3", ""), False), ("  48213", False), (" the the", False),
])
def test_exact_retrieval_accepts_the_key_and_nothing_else(generated, correct):
    assert is_exact_retrieval(generated, "48213") == correct


def test_a_model_that_copies_the_needle_retrieves_every_key_and_a_near_miss_none(tok):
    vocab = tok.get_vocab_size()
    cfg = PasskeyConfig(lengths=(64, 128), depths=(0.0, 0.5, 1.0), samples=2)
    copier = ModelScorer(CopyingLM(vocab), tok, 1.0, 64, batch_size=4, stream_chunk=50)
    metrics, records, _ = evaluate_passkey(copier, cfg, seed=0)
    assert metrics["acc"] == 1.0 and metrics["n"] == 12
    assert metrics["acc_grid"] == {"64": {"0.0": 1.0, "0.5": 1.0, "1.0": 1.0},
                                   "128": {"0.0": 1.0, "0.5": 1.0, "1.0": 1.0}}
    assert all(r["generated"].startswith(" " + r["key"] + " ") and r["is_greedy"] for r in records)
    assert metrics["chance"] == pytest.approx(1 / 90000)
    # copies from one token too far: every answer starts with the key's second digit
    off_by_one = ModelScorer(CopyingLM(vocab, shift=1), tok, 1.0, 64, batch_size=4)
    metrics, records, _ = evaluate_passkey(off_by_one, cfg, seed=0)
    assert metrics["acc"] == 0.0 and not any(r["is_greedy"] for r in records)


def test_a_scorer_that_answers_a_near_miss_scores_zero(tok):
    encode = encoder(tok)
    cfg = PasskeyConfig(lengths=(64,), depths=(0.0, 1.0), samples=3)

    def fake(answer):
        def greedy_after(prompts, targets, new_tokens):
            keys = [re.search(r"The passkey is (\d+)", tok.decode(p.tolist())).group(1) for p in prompts]
            return [encode(answer(k))[:new_tokens] for k in keys], [(-1.0, False)] * len(keys)
        return SimpleNamespace(encode=encode, decode=tok.decode, batch_size=4, greedy_after=greedy_after)

    exact = lambda k: f" {k}."
    for answer, acc in [(exact, 1.0), (lambda k: f" {k[:-1]}{(int(k[-1]) + 1) % 10}.", 0.0),
                        (lambda k: f" {k}7.", 0.0), (lambda k: f" {k[1:]}.", 0.0)]:
        metrics, _, _ = evaluate_passkey(fake(answer), cfg, seed=0)
        assert metrics["acc"] == acc

"""The model scorer: lm-eval's request semantics on our chunk-recurrent models. Every request
starts from a fresh memory state, batching and streaming change nothing, and the numbers
are the model's own log-probabilities (float64 unless a test says otherwise)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eval_helpers import VARIANTS, tiny_model, tiny_tokenizer
from nlrepro.eval.requests import encode_pair, rolling_windows
from nlrepro.eval.scorer import ModelScorer


REQUESTS = [
    ("The passkey is", " 12345."),
    ("Here is a list of records to remember. The value of", " amber-fox is 1234."),
    ("", " The quiet river watches the tower."),           # empty context: prefix token
    ("HAMLET:\nWhat news, my friend, from the cold harbour of the north? The wind is bitter",
     " and the night is long,"),
    ("What is the passkey?  ", "The passkey is"),            # trailing spaces move over
    ("The green valley " * 12, "finds the lantern."),        # longer than max_len: truncated
]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def scorer_for(model, tok, teach_scale=1.0, max_len=48, batch_size=4, stream_chunk=None):
    return ModelScorer(model, tok, teach_scale, max_len, batch_size, stream_chunk)


def direct_loglik(model, tok, context, continuation, teach_scale=1.0, max_len=48):
    """One request by hand: one forward from a fresh state over (ctx + cont)[-(max_len+1):][:-1]."""
    encode = lambda s: tok.encode(s, add_special_tokens=False).ids
    ctx, cont = encode_pair(encode, context, continuation, prefix_token=0)
    ids = (ctx + cont)[-(max_len + 1):]
    logits = model(torch.tensor([ids[:-1]]), teach_scale=teach_scale).logits[0]
    logp = F.log_softmax(logits[-len(cont):].double(), -1)
    target = torch.tensor(cont)
    return logp.gather(-1, target[:, None]).sum().item(), bool((logp.argmax(-1) == target).all())


@pytest.mark.parametrize("variant", VARIANTS)
def test_loglikelihood_is_the_models_log_probability_from_a_fresh_state(tok, variant):
    model = tiny_model(variant, tok.get_vocab_size())
    got = scorer_for(model, tok).loglikelihood(REQUESTS)
    for (ctx, cont), (ll, greedy) in zip(REQUESTS, got):
        want_ll, want_greedy = direct_loglik(model, tok, ctx, cont)
        assert ll == pytest.approx(want_ll, abs=1e-9) and greedy == want_greedy


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_scoring_equals_one_at_a_time(tok, variant):
    model = tiny_model(variant, tok.get_vocab_size())
    batched = scorer_for(model, tok, batch_size=len(REQUESTS)).loglikelihood(REQUESTS)
    single = scorer_for(model, tok, batch_size=1).loglikelihood(REQUESTS)
    for (b, bg), (s, sg) in zip(batched, single):
        assert b == pytest.approx(s, abs=1e-10) and bg == sg


def test_batched_equals_one_at_a_time_in_float32(tok):
    model = tiny_model("hope", tok.get_vocab_size(), dtype=torch.float32)
    batched = scorer_for(model, tok, batch_size=len(REQUESTS)).loglikelihood(REQUESTS)
    single = scorer_for(model, tok, batch_size=1).loglikelihood(REQUESTS)
    for (b, _), (s, _) in zip(batched, single):
        assert b == pytest.approx(s, abs=1e-5, rel=1e-6)


@pytest.mark.parametrize("variant", ["titan", "hope"])
def test_scoring_one_example_leaves_the_next_examples_score_unchanged(tok, variant):
    model = tiny_model(variant, tok.get_vocab_size())
    before = [p.clone() for p in model.parameters()]
    target = REQUESTS[3]
    alone = scorer_for(model, tok).loglikelihood([target])[0]
    for batch_size in (1, 2):
        scorer = scorer_for(model, tok, batch_size=batch_size)
        after_others = scorer.loglikelihood(REQUESTS[:3] + [target])[-1]
        reversed_order = scorer.loglikelihood([target] + REQUESTS[:3])[0]
        assert after_others == pytest.approx(alone, abs=1e-12)
        assert reversed_order == pytest.approx(alone, abs=1e-12)
    # fast weights live in the state only: the slow weights are untouched
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("variant", VARIANTS)
def test_in_context_updates_run_with_the_given_teach_scale(tok, variant):
    model = tiny_model(variant, tok.get_vocab_size())
    on = scorer_for(model, tok, teach_scale=1.0).loglikelihood(REQUESTS[:2])
    off = scorer_for(model, tok, teach_scale=0.0).loglikelihood(REQUESTS[:2])
    changed = any(abs(a[0] - b[0]) > 1e-9 for a, b in zip(on, off))
    assert changed == (variant != "transformer")


@pytest.mark.parametrize("variant", ["titan", "hope"])
def test_streaming_in_small_pieces_equals_one_call(tok, variant):
    model = tiny_model(variant, tok.get_vocab_size())
    whole = scorer_for(model, tok, stream_chunk=None).loglikelihood(REQUESTS)
    pieces = scorer_for(model, tok, stream_chunk=5).loglikelihood(REQUESTS)
    for (a, _), (b, _) in zip(whole, pieces):
        assert a == pytest.approx(b, abs=1e-10)


def test_is_greedy_is_true_exactly_when_every_token_is_the_argmax(tok):
    model = tiny_model("hope", tok.get_vocab_size())
    scorer = scorer_for(model, tok)
    context = tok.encode("The passkey is", add_special_tokens=False).ids
    greedy = []
    with torch.inference_mode():
        for _ in range(4):
            logits = model(torch.tensor([context + greedy]), teach_scale=1.0).logits
            greedy.append(int(logits[0, -1].argmax()))
    wrong = greedy[:2] + [(greedy[2] + 1) % tok.get_vocab_size()] + greedy[3:]
    (_, is_greedy), (_, not_greedy) = scorer.score_pairs([(context, greedy), (context, wrong)])
    assert is_greedy and not not_greedy


@pytest.mark.parametrize("variant", ["transformer", "hope"])
def test_rolling_loglikelihood_sums_independent_windows(tok, variant):
    model = tiny_model(variant, tok.get_vocab_size())
    scorer = scorer_for(model, tok, max_len=16)
    text = "The old mountain follows the kettle behind the warm stranger. " * 4
    ids = scorer.encode(text)
    windows = list(rolling_windows(ids, 16, 0))
    assert len(windows) > 2 and sum(len(t) for _, t in windows) == len(ids)
    by_hand = 0.0
    for context, target in windows:  # each window from a fresh state
        logits = model(torch.tensor([(context + target)[:-1]]), teach_scale=1.0).logits[0]
        logp = F.log_softmax(logits[-len(target):], -1)
        by_hand += logp.gather(-1, torch.tensor(target)[:, None]).sum().item()
    assert scorer.loglikelihood_rolling([text, ""]) == pytest.approx([by_hand, 0.0], abs=1e-9)


def test_the_prefix_token_is_end_of_text_and_conditions_an_empty_context(tok):
    scorer = scorer_for(tiny_model("transformer", tok.get_vocab_size()), tok)
    assert scorer.prefix_token == 0 == tok.token_to_id("<|endoftext|>")
    (ll, _), = scorer.loglikelihood([("", " The river.")])
    cont = scorer.encode(" The river.")
    (want, _), = scorer.score_pairs([([0], cont)])
    assert ll == want


@pytest.mark.parametrize("variant", ["titan", "hope"])
def test_greedy_after_a_streamed_prompt_matches_scoring_and_step_by_step_decoding(tok, variant):
    model = tiny_model(variant, tok.get_vocab_size())
    scorer = scorer_for(model, tok, max_len=200, stream_chunk=7)
    prompts = ["The quiet river watches the tower near the old road. The passkey is",
               "The value of amber-fox is 1234. The value of teal-owl is 5678. The passkey is"]
    ids = [scorer.encode(p) for p in prompts]
    n = min(map(len, ids))
    prompt_ids = [i[-n:] for i in ids]  # equal lengths: positions align in the batch
    targets = [scorer.encode(" 12345"), scorer.encode(" 987")]
    generated, scored = scorer.greedy_after(torch.tensor(prompt_ids), targets, 3)
    assert scored == [pytest.approx(s, abs=1e-9) for s in scorer.score_pairs(list(zip(prompt_ids, targets)))]
    for row, gen in zip(prompt_ids, generated):
        seq = list(row)
        for _ in range(3):
            seq.append(int(model(torch.tensor([seq]), teach_scale=1.0).logits[0, -1].argmax()))
        assert gen == seq[len(row):]

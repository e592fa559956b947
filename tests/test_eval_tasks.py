"""The zero-shot task layer reproduces lm-eval 0.4's prompts, token split and metrics.

Every fixture is written here, in the Hugging Face schema, into tmp_path."""
from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest

from nlrepro.errors import NLReproError
from nlrepro.eval import (
    TASKS,
    average_accuracy,
    build_examples,
    count_words,
    encode_pair,
    evaluate_task,
    hellaswag_preprocess,
    load_task,
    rolling_windows,
    truncate_left,
    wikitext_detokenize,
)
from nlrepro.eval.metrics import choice_record
from nlrepro.eval.tasks import ChoiceExample

ROWS = {
    "piqa": {"goal": "How do I dry wet shoes?", "sol1": "Stuff them with newspaper.",
             "sol2": "Put them in the oven.", "label": 0},
    "hellaswag": {"activity_label": "Home and Garden", "ctx_a": "A man kneels by a fence.",
                  "ctx_b": "he", "endings": ["paints the fence [title] Let it dry.",
                                             "eats  a sandwich.", "[step] runs away.",
                                             "sits down."], "label": "0"},
    "winogrande": {"sentence": "The trophy doesn't fit in the suitcase because _ is too big.",
                   "option1": "the trophy", "option2": "the suitcase", "answer": "1"},
    "arc_easy": {"question": "Which is a gas?", "answerKey": "B",
                 "choices": {"text": ["ice", "steam", "rock"], "label": ["A", "B", "C"]}},
    "arc_challenge": {"question": "What do plants need?", "answerKey": "3",
                      "choices": {"text": ["salt", "sand", "light", "oil"],
                                  "label": ["1", "2", "3", "4"]}},
    "siqa": {"context": "Kai gave Sam a gift.", "question": "How would Sam feel?",
             "answerA": "angry", "answerB": "grateful", "answerC": "bored", "label": "2"},
    "boolq": {"passage": "Paris -- Paris is the capital of France.",
              "question": "is paris the capital of france", "label": 1},
    "lambada_openai": {"text": "She opened the door and saw her old friend Tom"},
    "wikitext": {
        "page": " = Title = \n The 1 @,@ 000 @-@ year plan ( see below ) was \" bold \" . \n"
    },
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def load(tmp_path, task, rows=None):
    return load_task(task, write_jsonl(tmp_path / f"{task}.jsonl", rows or [ROWS[task]]))


def test_piqa_prompt_is_question_answer_and_choices_follow_a_space(tmp_path):
    (ex,) = load(tmp_path, "piqa").examples
    prompt = "Question: How do I dry wet shoes?\nAnswer:"
    assert ex.requests == (
        (prompt, " Stuff them with newspaper."),
        (prompt, " Put them in the oven."),
    )
    assert ex.gold == 0


def test_hellaswag_preprocess_turns_title_into_period_and_drops_tags():
    text = " Cut it [title] Wash it [step] now.  Done "
    assert hellaswag_preprocess(text) == "Cut it. Wash it now. Done"


def test_hellaswag_context_capitalises_ctx_b_and_endings_are_preprocessed(tmp_path):
    (ex,) = load(tmp_path, "hellaswag").examples
    prompt = "Home and Garden: A man kneels by a fence. He"
    assert [r[0] for r in ex.requests] == [prompt] * 4
    # a leading tag leaves its space behind (lm-eval strips before dropping tags, not after)
    assert ex.choices == (
        "paints the fence. Let it dry.", "eats a sandwich.", " runs away.", "sits down.")
    assert [r[1] for r in ex.requests] == [" " + c for c in ex.choices]
    assert ex.gold == 0


def test_winogrande_two_partial_contexts_share_one_continuation(tmp_path):
    (ex,) = load(tmp_path, "winogrande").examples
    assert ex.requests == (
        ("The trophy doesn't fit in the suitcase because the trophy", " is too big."),
        ("The trophy doesn't fit in the suitcase because the suitcase", " is too big."),
    )
    assert ex.gold == 0


def test_arc_gold_is_the_index_of_answer_key_in_labels_a_to_e_or_1_to_4(tmp_path):
    (easy,) = load(tmp_path, "arc_easy").examples
    (challenge,) = load(tmp_path, "arc_challenge").examples
    assert easy.requests[1] == ("Question: Which is a gas?\nAnswer:", " steam") and easy.gold == 1
    assert challenge.choices == ("salt", "sand", "light", "oil") and challenge.gold == 2
    assert challenge.requests[2] == ("Question: What do plants need?\nAnswer:", " light")


def test_siqa_prompt_joins_context_and_question_and_label_is_one_based(tmp_path):
    (ex,) = load(tmp_path, "siqa").examples
    prompt = "Q: Kai gave Sam a gift. How would Sam feel?\nA:"
    assert ex.requests == ((prompt, " angry"), (prompt, " grateful"), (prompt, " bored"))
    assert ex.gold == 1


def test_boolq_prompt_adds_question_mark_and_choices_are_no_yes(tmp_path):
    (ex,) = load(tmp_path, "boolq").examples
    prompt = ("Paris -- Paris is the capital of France.\n"
              "Question: is paris the capital of france?\nAnswer:")
    assert ex.requests == ((prompt, " no"), (prompt, " yes"))
    assert ex.gold == 1


def test_lambada_context_is_all_but_the_last_word_and_target_is_space_last_word(tmp_path):
    (ex,) = load(tmp_path, "lambada_openai").examples
    assert ex.context == "She opened the door and saw her old friend"
    assert ex.target == " Tom"


def test_wikitext_detokenizer_undoes_number_separators_punctuation_and_brackets():
    raw = ' = = Early life = = \n He was 1 @.@ 5 m tall , born in 1 @,@ 900 ( see " A " ) ; ok . \n'
    clean = ' == Early life ==\nHe was 1.5 m tall, born in 1,900 (see "A"); ok.\n'
    assert wikitext_detokenize(raw) == clean
    assert wikitext_detokenize("the players 's ball") == "the players's ball"
    assert wikitext_detokenize("the players ' ball") == "the players' ball"


def test_wikitext_words_and_bytes_are_counted_on_the_raw_page(tmp_path):
    page = ROWS["wikitext"]["page"]
    (ex,) = load(tmp_path, "wikitext").examples
    assert ex.text == ' = Title =\nThe 1,000-year plan (see below) was "bold".\n'
    # re.split on the raw page: leading and trailing whitespace each add an empty "word"
    assert ex.words == count_words(page) == len(re.split(r"\s+", page)) == 21
    assert ex.bytes == len(page.encode("utf-8"))


def test_acc_norm_divides_by_characters_and_can_disagree_with_acc():
    choices = ("go", "walk to the shop")
    ex = ChoiceExample(0, tuple(("Q:", " " + c) for c in choices), choices, gold=1)
    # "go": -4.0 total, -2.0 per char; "walk to the shop" (16 chars): -8.0 total, -0.5 per char
    record = choice_record(ex, [(-4.0, True), (-8.0, False)])
    assert (record["pred"], record["pred_norm"]) == (0, 1)
    assert (record["acc"], record["acc_norm"]) == (0.0, 1.0)


def test_continuation_tokens_are_whole_encoding_minus_context_encoding():
    vocab = {"ab": 0, "a": 1, "b": 2, "c": 3, " ": 4, " c": 5}

    def encode(text):  # greedy longest match: "ab" merges across the boundary
        ids, i = [], 0
        while i < len(text):
            piece = next(text[i:j] for j in range(len(text), i, -1) if text[i:j] in vocab)
            ids.append(vocab[piece])
            i += len(piece)
        return ids

    assert encode_pair(encode, "a", "bc") == ([1], [3])  # tok("abc")=[ab, c]; [len(tok("a")):]
    # trailing whitespace of the context moves to the continuation: " c" is one token
    assert encode_pair(encode, "ab ", "c") == ([0], [5])
    assert encode_pair(encode, "", "c", prefix_token=99) == ([99], [3])
    with pytest.raises(ValueError):
        encode_pair(encode, "", "c")


def test_truncate_left_keeps_the_rightmost_window():
    assert truncate_left([1, 2, 3, 4], [5, 6], max_len=4) == [2, 3, 4, 5]
    assert truncate_left([1], [2], max_len=4) == [1]


def test_rolling_windows_predict_every_token_once_within_max_len():
    tokens = list(range(10, 20))
    windows = list(rolling_windows(tokens, max_len=4, prefix_token=0))
    assert windows == [
        ([0], [10, 11, 12, 13]),
        ([13], [14, 15, 16, 17]),
        ([15, 16, 17], [18, 19]),  # the last window is topped up to a full input
    ]
    assert [t for _, targets in windows for t in targets] == tokens
    assert all(len(ctx) + len(tgt) - 1 <= 4 for ctx, tgt in windows)
    assert list(rolling_windows([7], max_len=4, prefix_token=0)) == [([0], [7])]
    assert list(rolling_windows([], max_len=4, prefix_token=0)) == []


def fake_loglikelihood(table):
    def loglikelihood(requests):
        return [table[continuation] for _, continuation in requests]
    return loglikelihood


def test_multiple_choice_metrics_from_a_fake_scorer(tmp_path):
    rows = [dict(ROWS["piqa"], label=0), dict(ROWS["piqa"], label=1)]
    data = load(tmp_path, "piqa", rows)
    # sol1 (26 chars): -13 total, -0.5/char; sol2 (21 chars): -12.6 total, -0.6/char
    result = evaluate_task(data, fake_loglikelihood({
        " Stuff them with newspaper.": (-13.0, False), " Put them in the oven.": (-12.6, True)}))
    assert result.metrics == {"acc": 0.5, "acc_norm": 0.5}
    first = result.records[0]
    assert (first["pred"], first["pred_norm"], first["gold"]) == (1, 0, 0)
    assert first["prompt"] == ["Question: How do I dry wet shoes?\nAnswer:"] * 2
    assert first["loglik"] == [-13.0, -12.6] and first["is_greedy"] == [False, True]


def test_winogrande_reports_acc_only(tmp_path):
    data = load(tmp_path, "winogrande")
    result = evaluate_task(data, lambda reqs: [(-1.0, True), (-2.0, False)])
    assert result.metrics == {"acc": 1.0}


def test_lambada_perplexity_is_exp_of_minus_mean_loglik_and_acc_needs_greedy(tmp_path):
    rows = [{"text": "a b"}, {"text": "c d"}]
    data = load(tmp_path, "lambada_openai", rows)
    result = evaluate_task(data, fake_loglikelihood({" b": (-1.0, True), " d": (-3.0, False)}))
    assert result.metrics["perplexity"] == pytest.approx(math.exp(2.0))
    assert result.metrics["acc"] == 0.5
    assert result.records[1] == {"doc_id": 1, "prompt": "c", "continuation": " d",
                                 "loglik": -3.0, "is_greedy": False}


def test_wikitext_metrics_pool_loglik_over_raw_words_and_bytes(tmp_path):
    rows = [{"page": "a b c"}, {"page": "d e"}]  # 3 + 2 words, 5 + 3 bytes
    data = load(tmp_path, "wikitext", rows)
    result = evaluate_task(data, loglikelihood_rolling=lambda texts: [-6.0, -4.0])
    assert result.metrics == pytest.approx({
        "word_perplexity": math.exp(10 / 5),
        "byte_perplexity": math.exp(10 / 8),
        "bits_per_byte": 10 / (8 * math.log(2)),
    })


def test_average_is_the_mean_of_the_eight_headline_columns():
    metrics = {t: {"acc": 0.5, "acc_norm": 0.25} for t in TASKS if t != "wikitext"}
    # hellaswag and arc_challenge count acc_norm: (6 * 0.5 + 2 * 0.25) / 8
    assert average_accuracy(metrics) == pytest.approx(0.4375)
    del metrics["boolq"]
    with pytest.raises(NLReproError, match="boolq"):
        average_accuracy(metrics)


def test_missing_field_names_task_file_and_field(tmp_path):
    row = {k: v for k, v in ROWS["siqa"].items() if k != "answerB"}
    path = write_jsonl(tmp_path / "siqa.jsonl", [row])
    message = r"task siqa: .*siqa\.jsonl: missing field 'answerB'"
    with pytest.raises(NLReproError, match=message) as err:
        load_task("siqa", path)
    assert "\n" not in str(err.value)


def test_unknown_task_is_a_clear_error():
    with pytest.raises(NLReproError, match="unknown task 'copa'"):
        load_task("copa")


def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "boolq.jsonl"
    path.write_text("")
    with pytest.raises(NLReproError, match=r"task boolq: .*boolq\.jsonl: file is empty"):
        load_task("boolq", path)


def test_bad_row_values_name_the_row_and_field(tmp_path):
    bad_key = dict(ROWS["arc_easy"], answerKey="E")
    with pytest.raises(NLReproError, match=r"arc_easy\.jsonl: row 1: field 'answerKey' is 'E'"):
        load(tmp_path, "arc_easy", [ROWS["arc_easy"], bad_key])
    with pytest.raises(NLReproError, match=r"row 0: field 'label' is 'true'"):
        build_examples("boolq", [dict(ROWS["boolq"], label="true")])
    with pytest.raises(NLReproError, match=r"field 'sentence' has no '_' blank"):
        build_examples("winogrande", [dict(ROWS["winogrande"], sentence="No blank.")])


def test_unsupported_missing_or_malformed_file_is_a_clear_error(tmp_path):
    with pytest.raises(NLReproError, match="unsupported file type '.csv'"):
        load_task("piqa", tmp_path / "piqa.csv")
    with pytest.raises(NLReproError, match="no such file"):
        load_task("piqa", tmp_path / "absent.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"goal": "x"}\n{oops\n')
    with pytest.raises(NLReproError, match=r"broken\.jsonl: not readable as json \(ArrowInvalid"):
        load_task("piqa", tmp_path / "broken.jsonl")


def test_jsonl_and_parquet_files_load_the_same_examples_with_limit(tmp_path):
    rows = [ROWS["arc_challenge"], dict(ROWS["arc_easy"], question="Second?"), ROWS["arc_easy"]]
    jsonl = load_task("arc_challenge", write_jsonl(tmp_path / "arc.jsonl", rows), limit=2)
    parquet_path = tmp_path / "arc.parquet"
    pd.DataFrame(rows).to_parquet(parquet_path)
    parquet = load_task("arc_challenge", parquet_path, limit=2)
    assert jsonl.examples == parquet.examples
    assert len(jsonl.examples) == 2 and jsonl.docs == rows[:2]
    assert jsonl.sha256 == parquet.sha256
    assert parquet.source == str(parquet_path)


def test_hub_path_asks_datasets_for_the_id_config_and_split(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([ROWS["winogrande"]] * 3)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_task("winogrande", limit=2)
    assert calls == [("allenai/winogrande", "winogrande_xl", "validation")]
    assert data.source == "hf:allenai/winogrande/winogrande_xl:validation"
    assert len(data.examples) == 2


def test_unreachable_hub_is_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach\n'huggingface.co'")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    message = r"task piqa: cannot load hf:baber/piqa:validation"
    with pytest.raises(NLReproError, match=message) as err:
        load_task("piqa")
    assert "\n" not in str(err.value)


def test_a_continuation_longer_than_the_window_is_one_line():
    from nlrepro.errors import NLReproError
    with pytest.raises(NLReproError, match="a continuation of 3 tokens does not fit the "
                                           "evaluation window of 2 tokens"):
        truncate_left([1], [2, 3, 4], max_len=2)

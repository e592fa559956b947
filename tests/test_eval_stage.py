"""Stage evaluate@<variant>: a checkpoint as training writes it -> metrics/eval/<variant>.json
with lineage, and per-example records; bad input is one line, exit 2, nothing written."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import smoke_params
from eval_helpers import tiny_tokenizer, write_project
from nlrepro.data.tokenizer import file_hash
from nlrepro.eval import load_task
from stages.evaluate import main
from test_eval_tasks import ROWS


EVAL = {"stream_chunk": 32, "batch_size": 4,
        "perplexity": {"docs": 4, "max_chars": 300},
        "last_word": {"samples": 6, "context_chars": 100},
        "choice": {"samples": 4, "num_choices": 3, "context_chars": 100, "continuation_words": 5},
        "passkey": {"lengths": [64, 96], "depths": [0.0, 1.0], "samples": 1}}
OFFLINE = ["perplexity", "last_word", "choice", "passkey"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture
def proj(tmp_path, tok, monkeypatch):
    """A scratch project holding a hope checkpoint; ``proj.run(**eval)`` runs the stage."""
    write_project(tmp_path, tok, "hope", teach_scale=0.5)
    monkeypatch.chdir(tmp_path)

    class Proj:
        root = tmp_path

        def run(self, variant="hope", **eval_overrides):
            params = smoke_params(eval={**EVAL, **eval_overrides})
            (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            main([variant])
            return json.loads((tmp_path / "metrics/eval" / f"{variant}-s0.json").read_text())

    return Proj()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_results_carry_lineage_counts_chance_and_auditable_records(proj):
    out = proj.run()
    lineage = out["lineage"]
    assert lineage["checkpoint"]["sha256"] == file_hash(proj.root / "models/hope-s0.pt")
    assert lineage["tokenizer_sha256"] == file_hash(proj.root / "data/tokenizer/tokenizer.json")
    assert set(lineage["params_hash"]) == {"eval", "params"} and lineage["test_split_sha256"]
    assert set(lineage["task_data_sha256"]) == set(OFFLINE) | {"icl"}
    icl = out["icl"]                                    # the in-context section on the val split
    assert (icl["sequences"], icl["length"]) == (2, 128)
    assert icl["gain"] == pytest.approx(icl["loss_off"] - icl["loss_on"], abs=1e-12)
    assert set(icl["ablation"]) == {"memory", "selfmod", "cms0", "cms1"}
    assert len(icl["by_position"]["on"]) == len(icl["by_position"]["off"]) == 128 // 32
    assert icl["stream"]["finite"] and icl["stream"]["tokens"] == 512
    assert lineage["attention"] == "swa" and lineage["window"] == 64
    assert lineage["git_commit"] == "unknown"          # a scratch directory outside git
    assert lineage["teach_scale"] == 0.5 and lineage["teach_scale_source"] == "checkpoint"
    assert lineage["max_len"] == 64 and lineage["prefix_token"] == {"id": 0, "token": "<|endoftext|>"}
    assert lineage["samples"] == {"perplexity": 4, "last_word": 6, "choice": 4, "passkey": 4}
    assert lineage["wall_time_s"]["total"] > 0
    for task in OFFLINE:
        assert "chance" in out["offline"][task] and out["offline"][task]["n"] == lineage["samples"][task]
        lines = (proj.root / "metrics/eval/hope-s0" / f"{task}.jsonl").read_text().splitlines()
        assert len(lines) == lineage["samples"][task]
    record = json.loads((proj.root / "metrics/eval/hope-s0/choice.jsonl").read_text().splitlines()[0])
    assert {"prompt", "continuation", "loglik", "is_greedy", "pred", "pred_norm", "gold"} <= set(record)
    assert out["offline"]["choice"]["chance"]["acc"] == pytest.approx(1 / 3)
    assert out["offline"]["passkey"]["acc_by_length"].keys() == {"64", "96"}
    assert out["zero_shot"] == {}


def test_reruns_are_identical_and_eval_teach_scale_overrides_the_checkpoint(proj):
    first, second = proj.run(), proj.run()
    assert first["offline"] == second["offline"]
    frozen = proj.run(teach_scale=0.0)
    assert frozen["lineage"]["teach_scale"] == 0.0
    assert frozen["lineage"]["teach_scale_source"] == "eval.teach_scale"
    assert frozen["offline"]["perplexity"] != first["offline"]["perplexity"]


def test_zero_shot_tasks_from_local_files_and_the_eight_column_average(proj, tmp_path_factory):
    files = tmp_path_factory.mktemp("tasks")
    tasks = {name: write_jsonl(files / f"{name}.jsonl", [row, row]) for name, row in ROWS.items()}
    out = proj.run(tasks={"piqa": tasks["piqa"], "lambada_openai": tasks["lambada_openai"]})
    assert set(out["zero_shot"]) == {"piqa", "lambada_openai"}       # no average of 2 columns
    assert out["zero_shot"]["piqa"]["chance"] == {"acc": 0.5, "acc_norm": 0.5}
    assert out["lineage"]["task_data_sha256"]["piqa"] == load_task("piqa", tasks["piqa"]).sha256
    assert len((proj.root / "metrics/eval/hope-s0/piqa.jsonl").read_text().splitlines()) == 2
    out = proj.run(tasks=tasks, task_limit=1)
    headline = ["lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                "siqa", "boolq"]
    picked = [out["zero_shot"][t]["acc_norm" if t in ("hellaswag", "arc_challenge") else "acc"]
              for t in headline]
    assert out["zero_shot"]["average_accuracy"] == pytest.approx(sum(picked) / 8)
    assert out["zero_shot"]["wikitext"]["n"] == 1 and "word_perplexity" in out["zero_shot"]["wikitext"]


def _fails_with(proj, capsys, text, variant="hope", **eval_overrides):
    with pytest.raises(SystemExit) as exc:
        proj.run(variant, **eval_overrides)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert text in err[0], err[0]
    assert not (proj.root / "metrics").exists()                     # nothing half-written


def test_a_task_file_missing_a_field_is_one_line(proj, capsys, tmp_path):
    row = {k: v for k, v in ROWS["piqa"].items() if k != "sol2"}
    path = write_jsonl(tmp_path / "piqa.jsonl", [row])
    _fails_with(proj, capsys, "missing field 'sol2'", tasks={"piqa": path})


def test_an_unknown_task_is_one_line(proj, capsys):
    _fails_with(proj, capsys, "eval.tasks.mmlu: unknown task", tasks={"mmlu": None})


def test_an_empty_task_file_is_one_line(proj, capsys, tmp_path):
    (tmp_path / "boolq.jsonl").write_text("")
    _fails_with(proj, capsys, "file is empty", tasks={"boolq": str(tmp_path / "boolq.jsonl")})


def test_a_checkpoint_whose_weights_do_not_match_its_config_is_refused(proj, capsys):
    payload = torch.load(proj.root / "models/hope-s0.pt", weights_only=False)
    payload["model"]["embed.weight"] = payload["model"]["embed.weight"][:, :16]
    torch.save(payload, proj.root / "models/hope-s0.pt")
    _fails_with(proj, capsys, "weights do not match the model")


def test_a_checkpoint_of_another_tokenizer_is_refused(proj, capsys, tok):
    (proj.root / "data/tokenizer/tokenizer.json").write_text(
        tiny_tokenizer(vocab_size=350).to_str())
    _fails_with(proj, capsys, "not the tokenizer models/hope-s0.pt was trained with")


def test_a_missing_checkpoint_and_an_unknown_variant_are_one_line(proj, capsys):
    _fails_with(proj, capsys, "models/titan-s0.pt: checkpoint not found", variant="titan")
    _fails_with(proj, capsys, "evaluate: unknown variant 'gpt'", variant="gpt")


def test_a_checkpoint_of_another_seed_is_refused(proj, capsys):
    """models/hope-s0.pt must hold seed 0's model: a copied file of seed 1 is refused."""
    payload = torch.load(proj.root / "models/hope-s0.pt", weights_only=False)
    payload["config"]["seed"] = 1
    torch.save(payload, proj.root / "models/hope-s0.pt")
    _fails_with(proj, capsys, "models/hope-s0.pt: was trained with seed 1, not 0")

"""The lm-eval adapter (nlrepro.harness): lm-evaluation-harness, running its own task
configs through the adapter, scores every request exactly as our evaluate stage does.

One scratch project with a tiny HOPE checkpoint; local task files in the Hugging Face
schema; the evaluate stage and lm-eval's real CLI (``python -m nlrepro.harness``, i.e.
``lm_eval.__main__.cli_evaluate`` with the model registered) run side by side as
subprocesses. The lm-eval tasks are lm-eval's installed arc_easy, lambada_openai and
wikitext configs, ``include:``d by absolute path so lm-eval resolves them itself, with only
the data source (``dataset_path: json`` + ``data_files``), the task name and the tag
replaced: the prompts are lm-eval's, not ours.
"""
from __future__ import annotations

import glob
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-eval is the optional extra (pip install -r requirements-lmeval.txt); "
                      "CI installs it")

from conftest import smoke_params, stage_env  # noqa: E402
from eval_helpers import tiny_tokenizer, write_project  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks._yaml_loader import load_yaml  # noqa: E402
from nlrepro.data.tokenizer import EOS  # noqa: E402
from nlrepro.errors import NLReproError  # noqa: E402
from nlrepro import harness  # noqa: E402
from nlrepro.harness import NLReproLM  # noqa: E402

# Both paths run the same scorer code at the same settings (teach scale, window, chunk,
# batch size, one thread), but lm-eval sends the requests of all its loglikelihood tasks in
# one call, so a request shares its right-padded batch with other rows than in the stage.
# Padding after a row changes nothing mathematically (the model is causal), but another
# batch shape makes float32 round differently: measured, 1 of 32 arc log-likelihoods
# differs, by 1.9e-6 = one float32 ulp at -17.9 (relative 1e-7); lambada and wikitext agree
# to the bit. The tolerance, max(ABS, REL * |loglik|), is 5 to 16 float32 ulps at every
# magnitude here (-12..-120 per request, -1141 and -331 per rolling document) yet catches
# real differences: a token more or less or another window moves a log-likelihood by
# > 0.1, and even the teach scale (0.5 vs 0) of this barely trained checkpoint by up to 9e-3.
ABS, REL = 1e-5, 1e-6
BATCH, CHUNK = 4, 32  # both paths; CHUNK < max_len (64) so streaming is exercised

ARC = [  # (question, choices, labels, answerKey) in the ai2_arc schema
    ("Which is a gas?", ["ice", "steam", "rock"], "ABC", "B"),
    ("What do plants need to make food?", ["salt", "sand", "light", "oil"], "1234", "3"),
    ("Which tool is used to measure temperature?",
     ["a ruler", "a thermometer", "a scale", "a compass"], "ABCD", "B"),
    ("What causes day and night on Earth?",
     ["the Earth spinning on its axis", "the Moon orbiting the Earth",
      "the Sun moving around the Earth", "clouds blocking the Sun"], "ABCD", "A"),
    ("Which animal is a mammal?", ["a shark", "a whale", "a frog", "a lizard"], "ABCD", "B"),
    ("What is the main source of energy for the water cycle?",
     ["wind", "the Sun", "the Moon", "volcanoes"], "ABCD", "B"),
    ("Which material conducts electricity best?", ["wood", "plastic", "copper", "glass"],
     "ABCD", "C"),
    ("A student stirs salt into water until it disappears. What has formed?",
     ["a solution", "a rock", "a gas", "a magnet", "a crystal of ice"], "ABCDE", "A"),
]
LAMBADA = [
    "She opened the door and saw her old friend Tom",
    "The king looked out over the harbour and called for his ship",
    "When the rain stopped, the children ran outside to play in the garden",
    "He wrote the letter by candlelight and sealed it with wax",
    "Every watchman slept beside his fire while the night grew long and cold",
    "HAMLET:\nWhat news, my friend, from the cold harbour of the north",
]
WIKITEXT = [
    " = Harbour of the North = \n \n The harbour was built in 1 @,@ 204 and rebuilt in the "
    "1850s @-@ 1860s . Ships from the south carried wool , wax and letters ; the watchmen "
    "slept beside their fires . \n \n = = History = = \n \n The castle above the harbour "
    "( see below ) was \" bold \" in design , and its walls are 3 @.@ 5 metres thick . \n",
    " = Tom = \n \n Tom is an old friend of the king . He opened the door , read the letter "
    "and went to the ship . \n",
]
LM_EVAL_TASKS = {  # our task name -> (lm-eval's installed config, data file name)
    "arc_easy": ("arc/arc_easy.yaml", "arc_easy.jsonl"),
    "lambada_openai": ("lambada/lambada_openai.yaml", "lambada.jsonl"),
    "wikitext": ("wikitext/wikitext.yaml", "wikitext.jsonl"),
}
EVAL = {"stream_chunk": CHUNK, "batch_size": BATCH,
        "perplexity": {"docs": 2, "max_chars": 200},
        "last_word": {"samples": 2, "context_chars": 60},
        "choice": {"samples": 2, "num_choices": 2, "context_chars": 60, "continuation_words": 3},
        "passkey": {"lengths": [64], "depths": [0.0], "samples": 1}}


def _rows() -> dict[str, list[dict]]:
    arc = [{"id": f"q{i}", "question": q, "answerKey": key,
            "choices": {"text": texts, "label": list(labels)}}
           for i, (q, texts, labels, key) in enumerate(ARC)]
    return {"arc_easy": arc, "lambada_openai": [{"text": t} for t in LAMBADA],
            "wikitext": [{"page": p} for p in WIKITEXT]}


def _write_lm_eval_task(task_dir: Path, name: str, data: Path) -> Path:
    """lm-eval's own config of ``name`` with the data source swapped for a local file."""
    installed = Path(lm_eval.__file__).parent / "tasks" / LM_EVAL_TASKS[name][0]
    config = {"include": str(installed), "task": f"local_{name}", "tag": [],
              "dataset_path": "json", "dataset_name": None,
              # every split the config names reads the file; only test_split is scored
              "dataset_kwargs": {"data_files": {s: str(data) for s in
                                                ("train", "validation", "test")}}}
    path = task_dir / f"local_{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return installed


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmeval_project")
    write_project(root, tiny_tokenizer(), "hope", teach_scale=0.5)
    return root


@pytest.fixture(scope="module")
def runs(project, tmp_path_factory):
    """The evaluate stage and lm-eval's CLI on the same checkpoint and task files."""
    data_dir, task_dir = project / "task_data", project / "lm_eval_tasks"
    data_dir.mkdir()
    task_dir.mkdir()
    files, installed = {}, {}
    for name, rows in _rows().items():
        files[name] = data_dir / LM_EVAL_TASKS[name][1]
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
        installed[name] = _write_lm_eval_task(task_dir, name, files[name])

    params = smoke_params(eval={**EVAL, "tasks": {k: str(v) for k, v in files.items()}})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**stage_env(), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path_factory.mktemp("hf_home")), "TOKENIZERS_PARALLELISM": "false"}
    out = project / "lm_eval_out"
    cli = [sys.executable, "-m", "nlrepro.harness", "--model", "nlrepro",
           "--model_args", f"checkpoint=models/hope-s0.pt,tokenizer=data/tokenizer/tokenizer.json,"
                           f"batch_size={BATCH},stream_chunk={CHUNK}",
           "--tasks", ",".join(f"local_{n}" for n in LM_EVAL_TASKS),
           "--include_path", str(task_dir), "--device", "cpu",
           "--log_samples", "--output_path", str(out)]
    procs = {"stage": subprocess.Popen([sys.executable, "-m", "stages.evaluate", "hope"],
                                       cwd=project, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True),
             "lm_eval": subprocess.Popen(cli, cwd=project, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)}
    logs = {name: proc.communicate(timeout=600)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} failed:\n{logs[name][-4000:]}"

    ours = {name: [json.loads(line) for line in
                   (project / "metrics/eval/hope-s0" / f"{name}.jsonl").read_text().splitlines()]
            for name in LM_EVAL_TASKS}
    summary = json.loads((project / "metrics/eval/hope-s0.json").read_text())
    (results_path,) = glob.glob(str(out / "**" / "results_*.json"), recursive=True)
    results = json.loads(Path(results_path).read_text())
    samples = {}
    for name in LM_EVAL_TASKS:
        (path,) = glob.glob(str(out / "**" / f"samples_local_{name}_*.jsonl"), recursive=True)
        rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
        samples[name] = sorted(rows, key=lambda r: r["doc_id"])
    return {"ours": ours, "zero_shot": summary["zero_shot"], "results": results,
            "samples": samples, "installed": installed}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)


def _max_abs_diff(pairs) -> float:
    return max(abs(a - b) for a, b in pairs)


def test_lm_eval_resolves_its_own_installed_task_configs(runs):
    for name, installed in runs["installed"].items():
        theirs = load_yaml(installed, resolve_func=True)
        used = runs["results"]["configs"][f"local_{name}"]
        assert used["dataset_path"] == "json"
        for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "output_type", "test_split"):
            if isinstance(theirs.get(key), str):
                assert used[key] == theirs[key], (name, key)
            elif callable(theirs.get(key)):              # serialised as its source
                assert f"def {theirs[key].__name__}(" in used[key], (name, key)
    config = runs["results"]["config"]              # get_model_info(), in lm-eval's results
    assert config["nlrepro_teach_scale"] == 0.5     # the checkpoint's
    assert config["nlrepro_max_len"] == 64          # row_len - 1
    assert (config["nlrepro_batch_size"], config["nlrepro_stream_chunk"]) == (BATCH, CHUNK)
    assert config["nlrepro_device"] == "cpu" and config["nlrepro_variant"] == "hope"


def test_multiple_choice_logliks_acc_and_acc_norm_match_the_evaluate_stage(runs):
    ours, theirs = runs["ours"]["arc_easy"], runs["samples"]["arc_easy"]
    assert [r["doc_id"] for r in ours] == [s["doc_id"] for s in theirs] == list(range(len(ARC)))
    pairs = []
    for record, sample in zip(ours, theirs):
        prompts = [a["arg_0"] for a in sample["arguments"].values()]
        conts = [a["arg_1"] for a in sample["arguments"].values()]
        assert (prompts, conts) == (record["prompt"], record["continuation"])  # same requests
        lls = [float(ll) for ll, _ in sample["filtered_resps"]]
        greedy = [str(g) == "True" for _, g in sample["filtered_resps"]]
        assert len(lls) == len(record["loglik"]) and greedy == record["is_greedy"]
        assert all(_close(a, b) for a, b in zip(lls, record["loglik"])), (lls, record["loglik"])
        pairs += list(zip(lls, record["loglik"]))
        assert (sample["acc"], sample["acc_norm"]) == (record["acc"], record["acc_norm"])
    print(f"arc_easy: {len(pairs)} log-likelihoods, max |diff| {_max_abs_diff(pairs):.3g}")
    metrics = runs["results"]["results"]["local_arc_easy"]
    assert metrics["acc,none"] == runs["zero_shot"]["arc_easy"]["acc"]
    assert metrics["acc_norm,none"] == runs["zero_shot"]["arc_easy"]["acc_norm"]


def test_lambada_logliks_greedy_perplexity_and_acc_match(runs):
    ours, theirs = runs["ours"]["lambada_openai"], runs["samples"]["lambada_openai"]
    assert len(ours) == len(theirs) == len(LAMBADA)
    pairs = []
    for record, sample in zip(ours, theirs):
        assert sample["arguments"]["gen_args_0"] == {"arg_0": record["prompt"],
                                                     "arg_1": record["continuation"]}
        ((ll, greedy),) = sample["filtered_resps"]
        assert _close(float(ll), record["loglik"]) and (str(greedy) == "True") == record["is_greedy"]
        pairs.append((float(ll), record["loglik"]))
    print(f"lambada: max |diff| {_max_abs_diff(pairs):.3g}")
    metrics = runs["results"]["results"]["local_lambada_openai"]
    assert metrics["acc,none"] == runs["zero_shot"]["lambada_openai"]["acc"]
    assert _close(metrics["perplexity,none"], runs["zero_shot"]["lambada_openai"]["perplexity"])


def test_wikitext_rolling_logliks_and_perplexities_match(runs):
    ours, theirs = runs["ours"]["wikitext"], runs["samples"]["wikitext"]
    assert len(ours) == len(theirs) == len(WIKITEXT)
    pairs = []
    for record, sample in zip(ours, theirs):
        (ll, words), (_, n_bytes), _ = [sample[m] for m in
                                        ("word_perplexity", "byte_perplexity", "bits_per_byte")]
        assert (words, n_bytes) == (record["words"], record["bytes"])
        assert _close(float(ll), record["loglik"])
        pairs.append((float(ll), record["loglik"]))
    print(f"wikitext: max |diff| {_max_abs_diff(pairs):.3g}")
    metrics = runs["results"]["results"]["local_wikitext"]
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert _close(metrics[f"{metric},none"], runs["zero_shot"]["wikitext"][metric]), metric


# --- the adapter in-process ---------------------------------------------------------


@pytest.fixture
def lm(project, monkeypatch):
    monkeypatch.chdir(project)                       # the default tokenizer path is relative
    return get_model("nlrepro").create_from_arg_obj(
        {"checkpoint": "models/hope-s0.pt", "max_gen_toks": 12}, {"batch_size": 1, "device": "cuda:0"})


def _gen(context: str, **kwargs) -> Instance:
    return Instance("generate_until", {}, (context, kwargs), 0)


def test_generation_is_greedy_from_a_fresh_state_and_stops_at_until(lm):
    # lm-eval's --device default cuda:0 is taken only where CUDA exists (else: automatic)
    assert isinstance(lm, NLReproLM)
    assert lm.info["nlrepro_device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    scorer, ctx = lm.scorer, "HAMLET:\nWhat news, my friend"
    ids, _ = scorer.greedy_after(torch.tensor([scorer.encode(ctx)]), [[0]], 12)
    free = scorer.decode(ids[0]).split(EOS)[0]
    assert lm.generate_until([_gen(ctx, until=[])]) == [free]
    # fresh state per request: a request's output does not depend on its neighbours
    other = "There is an important passkey hidden in this text."
    assert lm.generate_until([_gen(other), _gen(ctx), _gen(ctx)])[1:] == [free, free]
    stop = free[3:5]
    assert stop and lm.generate_until([_gen(ctx, until=[stop])]) == [free.split(stop)[0]]
    ids3, _ = scorer.greedy_after(torch.tensor([scorer.encode(ctx)]), [[0]], 3)
    assert lm.generate_until([_gen(ctx, until="\n\n\n", max_gen_toks=3)]) == \
        [scorer.decode(ids3[0]).split(EOS)[0]]
    with pytest.raises(NLReproError, match="only greedy"):
        lm.generate_until([_gen(ctx, do_sample=True, temperature=0.7)])


def _one_line_error(args: str) -> str:
    with pytest.raises(NLReproError) as exc:
        get_model("nlrepro").create_from_arg_string(args, {"batch_size": 1})
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_bad_model_args_are_one_clear_line(project, monkeypatch):
    monkeypatch.chdir(project)
    assert "checkpoint=<path to models/<variant>-s<seed>.pt> is required" in _one_line_error("")
    assert "unknown key(s) bogus" in _one_line_error("checkpoint=models/hope-s0.pt,bogus=1")
    assert "checkpoint not found" in _one_line_error("checkpoint=models/titan-s0.pt")
    assert "unreadable checkpoint" in _one_line_error(
        "checkpoint=data/tokenizer/tokenizer.json")
    assert "tokenizer not found" in _one_line_error(
        "checkpoint=models/hope-s0.pt,tokenizer=missing.json")
    assert "max_len=0 is not a positive integer" in _one_line_error(
        "checkpoint=models/hope-s0.pt,max_len=0")
    if not torch.cuda.is_available():
        assert "CUDA is not available" in _one_line_error(
            "checkpoint=models/hope-s0.pt,device=cuda")


def test_the_cli_wrapper_prints_an_adapter_error_as_one_line_and_exits_2(project, monkeypatch,
                                                                          capsys):
    """``main`` is lm-eval's CLI; a failing model construction inside it (lm-eval's own
    task indexing, 20 s, is skipped here) becomes ``error: ...`` and exit status 2."""
    import lm_eval.__main__

    monkeypatch.chdir(project)
    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", lambda: get_model(
        "nlrepro").create_from_arg_string("checkpoint=models/titan-s0.pt", {}))
    with pytest.raises(SystemExit) as exc:
        harness.main(["--model", "nlrepro"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err == ["error: models/titan-s0.pt: checkpoint not found"]


def test_importing_nlrepro_never_needs_lm_eval():
    code = ("import sys, nlrepro, nlrepro.eval, nlrepro.eval.runner, stages.evaluate; "
            "assert 'lm_eval' not in sys.modules, 'lm_eval imported'")
    out = subprocess.run([sys.executable, "-c", code], env=stage_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr

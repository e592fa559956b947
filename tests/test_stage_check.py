"""Stage check: the whole params.yaml validated and the files it names hashed into
data/inputs/ (nlrepro.inputs); byte-identical manifests when nothing changed."""
from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from conftest import smoke_params
from stages.check import main


@pytest.fixture
def proj(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text('{"text": "to be or not to be"}\n')
    (corpus / "b.jsonl").write_text('{"text": "that is the question"}\n')
    (tmp_path / "piqa.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}\n')
    params = smoke_params(eval={"tasks": {"piqa": "piqa.jsonl", "arc_easy": None}})
    params["data"]["sources"]["mine"] = {"type": "local", "paths": ["corpus/*.jsonl"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def run(capsys):
    try:
        main([])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


def test_manifests_name_every_file_with_its_hash(proj, capsys):
    code, out = run(capsys)
    assert code == 0, out.err
    assert "check: params.yaml valid; 3 input file(s)" in out.out
    mine = json.loads((proj / "data/inputs/source-mine.json").read_text())
    assert [f["path"] for f in mine["files"]] == ["corpus/a.jsonl", "corpus/b.jsonl"]
    blob = (proj / "corpus/a.jsonl").read_bytes()
    assert mine["files"][0] == {"path": "corpus/a.jsonl", "bytes": len(blob),
                                "sha256": hashlib.sha256(blob).hexdigest()}
    assert json.loads((proj / "data/inputs/source-shakespeare.json").read_text()) == \
        {"type": "shakespeare", "files": []}
    tasks = json.loads((proj / "data/inputs/eval_tasks.json").read_text())
    assert tasks["arc_easy"] == {"hub": True} and tasks["piqa"]["path"] == "piqa.jsonl"


def test_unchanged_inputs_give_identical_manifests_and_an_edit_changes_one(proj, capsys):
    assert run(capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in (proj / "data/inputs").iterdir()}
    assert run(capsys)[0] == 0
    assert {p.name: p.read_bytes() for p in (proj / "data/inputs").iterdir()} == before
    (proj / "corpus/b.jsonl").write_text('{"text": "that is the answer"}\n')
    assert run(capsys)[0] == 0
    after = {p.name: p.read_bytes() for p in (proj / "data/inputs").iterdir()}
    assert [n for n in before if before[n] != after[n]] == ["source-mine.json"]


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(tech_scale=0.1), "tech_scale: unknown key (did you mean 'teach_scale'?"),
    (lambda p: p["data"].update(filtr={}), "data.filtr: unknown key (did you mean 'filter'?"),
    (lambda p: p["teach"].update(levels={"memory": float("nan")}),
     "teach.levels.memory: must be a finite number, got nan"),
    (lambda p: p["data"]["sources"]["mine"].update(paths=["nowhere/*.txt"]),
     "local source: no file matches 'nowhere/*.txt'"),
    (lambda p: p["eval"]["tasks"].update(piqa="missing.jsonl"),
     "eval.tasks.piqa: file not found: missing.jsonl"),
])
def test_bad_params_or_missing_inputs_are_one_line_and_write_nothing(proj, capsys, edit, message):
    params = yaml.safe_load((proj / "params.yaml").read_text())
    edit(params)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    code, out = run(capsys)
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), out.err
    assert not (proj / "data/inputs").exists()

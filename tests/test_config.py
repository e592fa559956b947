"""params.yaml is read into one typed config; every bad value is one line naming its key."""
import pytest

from conftest import REPO, smoke_params
from nlrepro.config import Params, SyntheticSource, load_params
from nlrepro.configlib import ConfigError, parse


def test_repository_params_load_and_have_top_level_teach_scale():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params.teach_scale, float)
    assert set(params.data.sources) == {"shakespeare", "synthetic"}
    assert isinstance(params.data.sources["synthetic"], SyntheticSource)


def test_every_params_key_has_a_comment():
    lines = (REPO / "params.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        assert lines[i - 1].strip().startswith("#"), f"params.yaml line {i + 1} has no comment: {line}"


@pytest.mark.parametrize("patch, message", [
    ({"data": {"tokenizer": {"vocab_size": 10}}},
     "data.tokenizer.vocab_size: must be in [264, 65536], got 10"),
    ({"data": {"tokenizer": {"vocab_sise": 10}}}, "data.tokenizer.vocab_sise: unknown key"),
    ({"data": {"filter": {"min_chars": "ten"}}}, "data.filter.min_chars: expected an integer"),
    ({"teach_scale": -0.1}, "teach_scale: must be in [0.0, inf], got -0.1"),
    ({"teach_scale": "3e-4"}, "teach_scale: expected a number, got '3e-4' (write floats like 3.0e-4)"),
    ({"data": {"sources": {"x": {"type": "ftp"}}}},
     "data.sources.x.type: unknown type 'ftp' (expected one of hf, local, shakespeare, synthetic)"),
    ({"data": {"sources": {"x": {"type": "hf"}}}}, "data.sources.x.path: a dataset id"),
    ({"data": {"sources": {"x": {"type": "local", "paths": ["a"], "format": "csv"}}}},
     "data.sources.x.format: must be one of 'txt' | 'jsonl' | 'parquet', got 'csv'"),
    ({"data": {"filter": {"near_dup_threshold": True}}}, "data.filter.near_dup_threshold: expected"),
    ({"data": {"split": {"val_frac": 0.5, "test_frac": 0.5}}}, "data.split: val_frac + test_frac must be < 1"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"teach_scale": float("nan")}, "teach_scale: must be a finite number, got nan"),
    ({"teach_scale": float("inf")}, "teach_scale: must be a finite number, got inf"),
    ({"train": {"lr": float("nan")}}, "train.lr: must be a finite number, got nan"),
    ({"data": {"split": {"val_frac": float("nan")}}}, "data.split.val_frac: must be a finite number"),
    ({"eval": {"icl": {"stream_teach_scale": float("nan")}}}, "eval.icl.stream_teach_scale: must be a finite"),
])
def test_bad_values_fail_with_the_key_named(patch, message):
    with pytest.raises(ConfigError) as err:
        parse(Params, smoke_params(**patch))
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_ints_are_accepted_for_floats_and_lists_become_tuples():
    params = parse(Params, smoke_params(teach_scale=1))
    assert params.teach_scale == 1.0 and isinstance(params.teach_scale, float)
    assert params.data.sources["synthetic"].distances == (16, 64)


def test_stage_reports_bad_params_in_one_line_and_exits_nonzero(project):
    project.write_params(smoke_params(data={"tokenizer": {"vocab_size": 100000}}))
    result = project.run("stages.ingest", "synthetic")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: data.tokenizer.vocab_size: must be in [264, 65536], got 100000"]
    assert not (project.root / "data").exists()


def test_invalid_yaml_is_one_line(project):
    (project.root / "params.yaml").write_text("seed: [1,\n")
    result = project.run("stages.filter")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "params.yaml: not valid YAML" in result.stderr


def test_bare_off_read_as_false_by_yaml_still_means_off():
    # `dvc exp run -S` rewrites params.yaml and drops the quotes around "off".
    params = parse(Params, smoke_params(train={"anomaly": False}))
    assert params.train.anomaly == "off"
    with pytest.raises(ConfigError, match="train.anomaly: must be one of 'off' | 'detect'"):
        parse(Params, smoke_params(train={"anomaly": "sometimes"}))

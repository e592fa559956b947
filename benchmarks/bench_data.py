"""Benchmark of the data stages on the embedded corpus (Shakespeare + synthetic).

Prints filter throughput (documents/s) and tokenization throughput (tokens/s) of our
path (`encode_batch` per batch into `token_shards.RowWriter`, which writes the token
shards: what stage tokenize runs) next to the raw
`tokenizers` batch encoders on the same text in the same run, with their ratios.
Run: `make bench` (or `PYTHONPATH=src python benchmarks/bench_data.py`).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nlrepro.data.config import FilterConfig, ShakespeareSource, SyntheticSource
from nlrepro.data.filters import filter_documents
from nlrepro.data.sources import iter_source
from nlrepro.data.token_shards import RowWriter
from nlrepro.data.tokenize import encode_batch, token_dtype
from nlrepro.data.tokenizer import train_tokenizer


def best_of(fn, repeats: int) -> tuple[float, object]:
    """Fastest wall time of ``repeats`` calls (the least disturbed by other load)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab-size", type=int, default=4096)
    args = ap.parse_args()

    docs = [(d, "shakespeare", t) for d, t in
            iter_source("shakespeare", ShakespeareSource(type="shakespeare"), 0)]
    docs += [(d, "synthetic", t) for d, t in
             iter_source("synthetic", SyntheticSource(type="synthetic"), 0)]
    chars = sum(len(t) for _, _, t in docs)
    print(f"corpus: {len(docs):,} documents, {chars:,} characters")

    t_filter, (kept, _) = best_of(lambda: filter_documents(docs, FilterConfig()), args.repeats)
    print(f"filter: {len(docs) / t_filter:,.0f} docs/s ({chars / t_filter / 1e6:.2f} M chars/s)")

    texts = [t for _, _, t in kept]
    tok = train_tokenizer(texts, args.vocab_size, 2)

    t_raw, encs = best_of(lambda: tok.encode_batch(texts), args.repeats)
    n_tokens = sum(len(e.ids) for e in encs)
    t_fast, _ = best_of(lambda: tok.encode_batch_fast(texts), args.repeats)

    def ours(out: Path) -> dict:
        writer = RowWriter(out, "train", 257, 4096, 0, token_dtype(tok.get_vocab_size()))
        for start in range(0, len(texts), 256):
            for ids in encode_batch(tok, texts[start:start + 256]):
                writer.add(ids)
        return writer.close()

    with tempfile.TemporaryDirectory() as tmp:
        t_ours, _ = best_of(lambda: ours(Path(tmp)), args.repeats)
    raw, fast, mine = n_tokens / t_raw, n_tokens / t_fast, n_tokens / t_ours
    print(f"tokenize: {n_tokens:,} tokens")
    print(f"  tokenizers encode_batch       {raw:12,.0f} tokens/s")
    print(f"  tokenizers encode_batch_fast  {fast:12,.0f} tokens/s")
    print(f"  nlrepro encode + shards       {mine:12,.0f} tokens/s")
    print(f"  ratio nlrepro / encode_batch      {mine / raw:.2f}  (target >= 0.8)")
    print(f"  ratio nlrepro / encode_batch_fast {mine / fast:.2f}")


if __name__ == "__main__":
    main()

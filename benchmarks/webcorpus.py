"""A generated web-like corpus for the data benchmarks: documents of Shakespeare speech
blocks with the duplication a crawl has.

Shares (of documents; the rest are originals):
- 10% exact copies of an earlier document,
- 10% near copies: an earlier document with 1-5% of its words replaced,
- 5% non-English: an original passed through a letter substitution onto accented
  letters, so it has no English function words (our ``not_english`` rule and any language
  identifier reject it),
- 5% short: under 200 characters (``too_short``).

An original is a random draw of speech blocks (paragraphs of the embedded plays) until a
length drawn log-uniformly between 1 and 8 KB (mean about 3.4 KB), so two originals
rarely share a 5-word shingle beyond the plays' own repeats. Seeded: the same bytes for
the same arguments. Written as parquet files of ``doc_id, text`` (the filter stage's input
schema) plus the truth, ``kind`` (original, exact, near, foreign, short) and ``edit`` (the
share of words replaced in a near copy), in row groups of 256 documents.

    PYTHONPATH=src python benchmarks/webcorpus.py OUT_DIR --mb 500
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nlrepro.data.config import ShakespeareSource
from nlrepro.data.sources import iter_source

SCHEMA = pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("kind", pa.string()),
                    ("edit", pa.float32())])
SHARES = {"exact": 0.10, "near": 0.10, "foreign": 0.05, "short": 0.05}
# Letter substitution for the non-English documents (lower and upper case).
_FOREIGN = str.maketrans("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                         "äbçđéfğħíjķłmñöpqřšţüvŵxÿžÄBÇĐÉFĞĦÍJĶŁMÑÖPQŘŠŢÜVŴXŸŽ")


def speech_blocks() -> list[str]:
    """The paragraphs of the embedded plays (speeches, stage directions) of 40+ chars."""
    blocks = []
    for _, text in iter_source("shakespeare", ShakespeareSource(type="shakespeare"), 0):
        blocks.extend(b for b in text.split("\n\n") if len(b) >= 40)
    return blocks


def generate(out: Path, mb: float, seed: int = 0, files: int = 8) -> dict:
    """Write about ``mb`` MB (10^6 bytes of UTF-8 text) into ``files`` parquet files under
    ``out``; return the manifest (documents, bytes and kind counts), also saved as
    ``corpus.json``. File ``f`` holds the ``f``-th share of the documents in order of
    generation, so the filter's order (files sorted by name) is the generation order: a
    copy comes after its original (often in another file), and "the copy was dropped" is
    the measure of recall."""
    rng = np.random.default_rng(seed)
    blocks = speech_blocks()
    words = sorted({w for b in blocks[:2000] for w in b.split()})
    out.mkdir(parents=True, exist_ok=True)
    writers = [None] * files
    buf: list[list[tuple[str, str, float]]] = [[] for _ in range(files)]
    written = [0] * files
    counts = {"original": 0, **{k: 0 for k in SHARES}}
    originals: list[str] = []  # the last 4096 originals: copies are of recent documents,
    # like a crawl that meets a page again soon after
    total, n = 0, 0
    edges = np.cumsum(list(SHARES.values()))

    def flush(f: int) -> None:
        if not buf[f]:
            return
        if writers[f] is None:
            writers[f] = pq.ParquetWriter(out / f"web-{f:02d}.parquet", SCHEMA)
        ids = [f"web/{f:02d}/{i:09d}" for i in range(written[f], written[f] + len(buf[f]))]
        written[f] += len(buf[f])
        text, kind, edit = zip(*buf[f])
        writers[f].write_table(pa.table({"doc_id": ids, "text": list(text), "kind": list(kind),
                                         "edit": list(edit)}, schema=SCHEMA))
        buf[f] = []

    def original() -> str:
        target = int(np.exp(rng.uniform(np.log(1000), np.log(8000))))
        parts, size = [], 0
        while size < target:
            b = blocks[int(rng.integers(len(blocks)))]
            parts.append(b)
            size += len(b) + 2
        return "\n\n".join(parts)

    while total < mb * 1e6:
        r = rng.random()
        kind = "original" if r >= edges[-1] or not originals else \
            list(SHARES)[int(np.searchsorted(edges, r, side="right"))]
        edit = 0.0
        if kind == "exact":
            text = originals[int(rng.integers(len(originals)))]
        elif kind == "near":
            toks = originals[int(rng.integers(len(originals)))].split(" ")
            k = max(1, int(len(toks) * rng.uniform(0.01, 0.05)))
            edit = k / len(toks)
            for i in rng.choice(len(toks), k, replace=False):
                toks[i] = words[int(rng.integers(len(words)))]
            text = " ".join(toks)
        elif kind == "foreign":
            text = original().translate(_FOREIGN)
        elif kind == "short":
            text = blocks[int(rng.integers(len(blocks)))][:int(rng.integers(40, 200))]
        else:
            text = original()
            originals.append(text)
            if len(originals) > 4096:
                originals.pop(0)
        counts[kind] += 1
        f = min(files - 1, int(total * files / (mb * 1e6)))
        buf[f].append((text, kind, edit))
        if len(buf[f]) == 256:
            flush(f)
        total += len(text.encode("utf-8"))
        n += 1
    for f in range(files):
        flush(f)
        if writers[f] is not None:
            writers[f].close()
    manifest = {"seed": seed, "mb": mb, "files": files, "docs": n, "bytes": total,
                "kinds": counts}
    (out / "corpus.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--mb", type=float, default=500.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--files", type=int, default=8)
    args = ap.parse_args()
    print(json.dumps(generate(args.out, args.mb, args.seed, args.files)))


if __name__ == "__main__":
    main()

"""The anchor of the data benchmark: datatrove's OWN filters and MinHash dedup on the same
corpus, as its documentation composes them (FineWeb's recipe, cut to the rules we have):

  A. read -> LambdaFilter(length >= 200 chars) -> GopherQualityFilter -> write
  B. MinhashDedupSignature (5-word shingles, 8 bands x 16 rows: our banding)
  C. MinhashDedupBuckets, D. MinhashDedupCluster, E. MinhashDedupFilter -> write

Exact duplicates are caught by the MinHash stages (Jaccard 1). Not included: its
LanguageFilter (downloads a fastText model at run time; no network here). Needs datatrove
and spaCy (its English word tokenizer): ``pip install datatrove[io] spacy``.

    python benchmarks/anchor_datatrove.py CORPUS_DIR OUT_DIR --workers N [--files K]

Prints one JSON line: documents in and out, seconds per stage and in total.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--files", type=int, default=None, help="read only the first K files")
    args = ap.parse_args()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets,
                                                  MinhashDedupCluster, MinhashDedupFilter,
                                                  MinhashDedupSignature)
    from datatrove.pipeline.filters import GopherQualityFilter, LambdaFilter
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    files = sorted(p.name for p in args.corpus.glob("*.parquet"))[:args.files]
    inp = args.out / "input"  # links, so the reader sees only the chosen files
    shutil.rmtree(args.out, ignore_errors=True)
    inp.mkdir(parents=True)
    for name in files:
        (inp / name).symlink_to((args.corpus / name).resolve())
    d = {k: str(args.out / k) for k in ("filtered", "sigs", "buckets", "remove", "final")}
    cfg = MinhashConfig(n_grams=5, num_buckets=8, hashes_per_bucket=16,
                        hash_config=HashConfig(precision=64))
    w, out = args.workers, args.out
    plan = [
        ("A_filter", [ParquetReader(str(inp), glob_pattern="*.parquet", id_key="doc_id"),
                      LambdaFilter(lambda doc: len(doc.text) >= 200),
                      GopherQualityFilter(), JsonlWriter(d["filtered"])], w),
        ("B_signatures", [JsonlReader(d["filtered"]),
                          MinhashDedupSignature(d["sigs"], config=cfg)], w),
        ("C_buckets", [MinhashDedupBuckets(d["sigs"], d["buckets"], config=cfg)], 8),
        ("D_cluster", [MinhashDedupCluster(d["buckets"], d["remove"], config=cfg)], 1),
        ("E_dedup", [JsonlReader(d["filtered"]), MinhashDedupFilter(d["remove"]),
                     JsonlWriter(d["final"])], w),
    ]
    seconds, total = {}, time.perf_counter()
    for name, pipeline, tasks in plan:
        start = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(w, tasks),
                              logging_dir=str(out / "logs" / name)).run()
        seconds[name] = round(time.perf_counter() - start, 2)
    total = time.perf_counter() - total
    import pyarrow.parquet as pq
    docs_in = sum(pq.ParquetFile(inp / f).metadata.num_rows for f in files)
    import gzip
    docs_out = sum(1 for f in Path(d["final"]).glob("*.jsonl.gz") for _ in gzip.open(f))
    print(json.dumps({"workers": w, "files": files, "docs_in": docs_in, "docs_out": docs_out,
                      "seconds": seconds, "total_s": round(total, 2)}))


if __name__ == "__main__":
    main()

"""Benchmark of the data half on a generated web-like corpus (benchmarks/webcorpus.py).

In one run, each measurement in its own process (its peak RSS is that process's VmHWM,
and for the engine also the largest of its worker processes'):
  - filter in process (the stage's default, streaming): a small slice of the corpus and
    the whole, for peak RSS against corpus size;
  - filter on the datatrove engine with 1 and 2 workers: per-step seconds, the scaling
    ratio, and a check that all outputs are byte-identical;
  - near-duplicate recall against the corpus's truth, by share of words edited;
  - the anchor: datatrove's own filters and MinHash (benchmarks/anchor_datatrove.py) on
    the first files of the same corpus, with 1 and 2 workers (needs spaCy; its Python is
    --anchor-python);
  - tokenize: our path (encode_batch into the token shards) against the raw
    `tokenizers` batch encoder, on a slice of the kept text.

    PYTHONPATH=src python benchmarks/bench_data.py --mb 500 --md
    (`make bench` runs it at a small size; docs/DATA.md has the 500 MB table)
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("NLREPRO_BENCH_SRC", str(ROOT / "src")))
sys.path.insert(0, str(ROOT / "benchmarks"))


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class DescendantPeak:
    """The largest VmHWM among this process's descendants (the engine's workers are
    children of datatrove's forkserver), sampled every 0.2 s from /proc while running."""

    def __init__(self):
        import threading
        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.2):
            parent = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        parent[int(entry.name)] = int(
                            (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    except (OSError, ValueError, IndexError):
                        continue
            for pid in parent:
                p, seen = pid, 0
                while p in parent and p != me and seen < 64:
                    p, seen = parent[p], seen + 1
                if p == me and pid != me:
                    try:
                        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                            if line.startswith("VmHWM:"):
                                self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                    except OSError:
                        continue

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# --- tasks, each run in a fresh process (`--task`) ---------------------------------------

def task_filter(corpus: str, files: int, out: str, workers: int) -> dict:
    import pyarrow.parquet as pq

    from nlrepro.data.config import FilterConfig
    from nlrepro.data.filter_stream import filter_to_parquet
    from nlrepro.data.shards import iter_batches

    paths = sorted(Path(corpus).glob("*.parquet"))[:files]
    cfg = FilterConfig()
    timings: dict = {}
    out = Path(out)
    scratch = out.parent / f".scratch-{out.stem}"
    shutil.rmtree(scratch, ignore_errors=True)
    workers_peak = DescendantPeak()
    start = time.perf_counter()
    if workers == 0:  # in process
        def docs():
            for p in paths:
                for b in iter_batches(p, ["doc_id", "text"], 1024):
                    yield from ((d, p.stem, t) for d, t in zip(b.column(0).to_pylist(),
                                                               b.column(1).to_pylist()))
        kept, stats = filter_to_parquet(docs(), cfg, out, scratch, 256, timings=timings)
        shutil.rmtree(scratch)
    else:
        from nlrepro.data.engine import filter_files
        cfg = dataclasses.replace(cfg, workers=workers, part_docs=2000)
        kept, stats = filter_files({p.stem: p for p in paths}, cfg, scratch, out, 256,
                                   timings=timings)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "timings": timings, "kept": kept,
            "docs_in": sum(s["docs_in"] for s in stats.sources.values()),
            "rules": {r: v["docs"] for r, v in stats.rules.items()},
            "peak_rss_mb": peak_rss_mb(), "children_peak_rss_mb": workers_peak.stop(),
            "sha": sha(out)}


def task_reference(corpus: str, files: int, out: str) -> dict:
    """The filter stage as it was before it streamed: every source read into one list,
    ``filter_documents`` (in memory), the kept documents written as one table; timed end
    to end like the streaming runs. With --baseline-src, an earlier commit's code."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nlrepro.data.config import FilterConfig
    from nlrepro.data.filters import filter_documents

    start = time.perf_counter()
    docs = []
    for p in sorted(Path(corpus).glob("*.parquet"))[:files]:
        t = pq.read_table(p, columns=["doc_id", "text"])
        docs += [(d, p.stem, x) for d, x in zip(t.column(0).to_pylist(), t.column(1).to_pylist())]
    kept, stats = filter_documents(docs, FilterConfig())
    pq.write_table(pa.table({"doc_id": [d for d, _, _ in kept], "source": [s for _, s, _ in kept],
                             "text": [t for _, _, t in kept]}), out, compression="zstd",
                   use_dictionary=False, write_statistics=False, row_group_size=256)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "timings": {}, "kept": len(kept), "docs_in": len(docs),
            "rules": {r: v["docs"] for r, v in stats.rules.items()},
            "peak_rss_mb": peak_rss_mb(), "children_peak_rss_mb": 0.0}


def task_tokenize(docs_parquet: str, mb: float, vocab: int) -> dict:
    from nlrepro.data.shards import iter_batches
    from nlrepro.data.token_shards import RowWriter
    from nlrepro.data.tokenize import encode_batch, token_dtype
    from nlrepro.data.tokenizer import train_tokenizer

    texts, size = [], 0
    for b in iter_batches(Path(docs_parquet), ["text"], 1024):
        for t in b.column(0).to_pylist():
            texts.append(t)
            size += len(t.encode("utf-8"))
        if size >= mb * 1e6:
            break
    tok = train_tokenizer(texts[:2000], vocab, 2)

    def best(fn, repeats=2):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        return min(times), result

    t_raw, encs = best(lambda: tok.encode_batch(texts))
    n_tokens = sum(len(e.ids) for e in encs)
    del encs

    def ours(out: Path) -> None:
        writer = RowWriter(out, "train", 257, 4096, 0, token_dtype(tok.get_vocab_size()))
        for start in range(0, len(texts), 256):
            for ids in encode_batch(tok, texts[start:start + 256]):
                writer.add(ids)
        writer.close()

    with tempfile.TemporaryDirectory() as tmp:
        t_ours, _ = best(lambda: ours(Path(tmp)))
    return {"mb": size / 1e6, "docs": len(texts), "tokens": n_tokens,
            "raw_tokens_per_s": n_tokens / t_raw, "ours_tokens_per_s": n_tokens / t_ours,
            "ratio": t_raw / t_ours}


def task_recall(corpus: str, docs_parquet: str) -> dict:
    """Share of near copies dropped, by share of words edited (the truth columns)."""
    import numpy as np
    import pyarrow.parquet as pq

    kept = set(pq.read_table(docs_parquet, columns=["doc_id"]).column(0).to_pylist())
    kinds, edits, dropped = [], [], []
    for p in sorted(Path(corpus).glob("*.parquet")):
        t = pq.read_table(p, columns=["doc_id", "kind", "edit"])
        kinds += t.column("kind").to_pylist()
        edits += t.column("edit").to_pylist()
        dropped += [d not in kept for d in t.column("doc_id").to_pylist()]
    kinds, edits, dropped = np.array(kinds), np.array(edits), np.array(dropped)
    out = {}
    for lo, hi in ((0.0, 0.015), (0.015, 0.025), (0.025, 0.035), (0.035, 0.06)):
        m = (kinds == "near") & (edits >= lo) & (edits < hi)
        out[f"{lo * 100:.1f}-{hi * 100:.1f}%"] = {"n": int(m.sum()),
                                                 "recall": float(dropped[m].mean())}
    near = kinds == "near"
    out["all"] = {"n": int(near.sum()), "recall": float(dropped[near].mean())}
    out["originals_dropped"] = float(dropped[kinds == "original"].mean())
    out["exact_copies_dropped"] = float(dropped[kinds == "exact"].mean())
    return out


TASKS = {"filter": task_filter, "tokenize": task_tokenize, "recall": task_recall,
         "reference": task_reference}


def run_task(name: str, src: Path = ROOT / "src", **kwargs) -> dict:
    """Run one task in a fresh process (with ``src`` as the nlrepro on its path); its
    last stdout line is the JSON result."""
    env = {**os.environ, "PYTHONPATH": str(src), "NLREPRO_BENCH_SRC": str(src)}
    proc = subprocess.run([sys.executable, __file__, "--task", json.dumps([name, kwargs])],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"error: task {name} {kwargs} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_anchor(python: str, corpus: Path, out: Path, workers: int, files: int) -> dict:
    check = subprocess.run([python, "-c", "import datatrove, spacy"], capture_output=True)
    if check.returncode:
        return {"error": f"skipped: {python} lacks datatrove or spaCy "
                         f"(pip install 'datatrove[io]' spacy, or pass --anchor-python)"}
    proc = subprocess.run([python, str(ROOT / "benchmarks" / "anchor_datatrove.py"),
                           str(corpus), str(out), "--workers", str(workers),
                           "--files", str(files)], capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", help=argparse.SUPPRESS)
    ap.add_argument("--mb", type=float, default=40.0, help="corpus size (MB of text)")
    ap.add_argument("--files", type=int, default=8, help="parquet files of the corpus")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="where the corpus is generated or reused (default: a temp dir)")
    ap.add_argument("--anchor-files", type=int, default=2,
                    help="files of the corpus the anchor reads (0: no anchor; datatrove "
                         "gives a file to one task, so 2 workers need 2 files)")
    ap.add_argument("--anchor-python", default=sys.executable,
                    help="a Python with datatrove and spaCy for the anchor")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="an earlier commit's src/ (git archive REV src | tar -x -C DIR): "
                         "its in-memory filter_documents is timed on the same corpus")
    ap.add_argument("--tokenize-mb", type=float, default=20.0)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--md", action="store_true", help="print Markdown tables")
    args = ap.parse_args()
    if args.task:
        name, kwargs = json.loads(args.task)
        print(json.dumps(TASKS[name](**kwargs)))
        return

    from webcorpus import generate

    work = Path(tempfile.mkdtemp(prefix="nlrepro-bench-data-"))
    corpus = args.corpus or work / "corpus"
    manifest_path = corpus / "corpus.json"
    want = {"mb": args.mb, "files": args.files, "seed": 0}
    if not (manifest_path.exists() and all(json.loads(manifest_path.read_text()).get(k) == v
                                           for k, v in want.items())):
        shutil.rmtree(corpus, ignore_errors=True)
        generate(corpus, args.mb, 0, args.files)
    manifest = json.loads(manifest_path.read_text())
    mb_total = manifest["bytes"] / 1e6
    print(f"corpus: {manifest['docs']:,} documents, {mb_total:.1f} MB, {manifest['kinds']}",
          flush=True)
    res = {"corpus": manifest, "filter": {}, "anchor": {}}
    try:
        runs = [("in process, 1 file", 0, 1), ("in process", 0, args.files),
                ("engine, 1 worker", 1, args.files), ("engine, 2 workers", 2, args.files)]
        for label, workers, files in runs:
            r = run_task("filter", corpus=str(corpus), files=files, workers=workers,
                         out=str(work / f"out-{workers}-{files}.parquet"))
            r["mb"] = mb_total * files / args.files  # files hold equal shares of bytes
            res["filter"][label] = r
            print(f"filter {label}: {r['seconds']:.1f} s, {r['docs_in'] / r['seconds']:,.0f} "
                  f"docs/s, {r['mb'] / r['seconds']:.2f} MB/s, peak RSS {r['peak_rss_mb']:.0f}"
                  f" MB (workers {r['children_peak_rss_mb']:.0f} MB), "
                  f"{ {k: round(v, 1) for k, v in r['timings'].items()} }", flush=True)
        refs = [("in memory (filter_documents), this commit", ROOT / "src")]
        if args.baseline_src:
            refs.append(("in memory (filter_documents), baseline", args.baseline_src))
        res["recall"] = {}
        for i, (label, src) in enumerate(refs):
            ref_out = work / f"reference-{i}.parquet"
            r = run_task("reference", src=src, corpus=str(corpus), files=args.files,
                         out=str(ref_out))
            res["recall"][label] = run_task("recall", corpus=str(corpus),
                                            docs_parquet=str(ref_out))
            r["mb"] = mb_total
            res["filter"][label] = r
            print(f"{label}: {r['seconds']:.1f} s, {r['docs_in'] / r['seconds']:,.0f} docs/s, "
                  f"{r['mb'] / r['seconds']:.2f} MB/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"kept {r['kept']:,}", flush=True)
        outs = [work / f"out-{w}-{args.files}.parquet" for w in (0, 1, 2)]
        res["identical"] = len({sha(p) for p in outs}) == 1
        res["recall"]["streaming, this commit"] = run_task("recall", corpus=str(corpus),
                                                           docs_parquet=str(outs[0]))
        print(f"outputs identical for in process / 1 / 2 workers: {res['identical']}")
        print(f"near-duplicate recall: {json.dumps(res['recall'])}", flush=True)
        if args.anchor_files:
            for w in (1, 2):
                a = run_anchor(args.anchor_python, corpus, work / f"anchor{w}", w,
                               args.anchor_files)
                res["anchor"][f"{w} worker{'s' if w > 1 else ''}"] = a
                print(f"anchor datatrove, {w} worker(s): {a}", flush=True)
        res["tokenize"] = run_task("tokenize", docs_parquet=str(outs[0]),
                                   mb=args.tokenize_mb, vocab=args.vocab_size)
        print(f"tokenize: {res['tokenize']}")
    finally:
        shutil.rmtree(work / "anchor1", ignore_errors=True)
        shutil.rmtree(work / "anchor2", ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    if args.md:
        print(markdown(res, args.files, args.anchor_files))
    if args.corpus is None:
        shutil.rmtree(work, ignore_errors=True)


def markdown(res: dict, files: int, anchor_files: int) -> str:
    f = res["filter"]
    lines = ["| filter + dedup | docs/s | MB/s | peak RSS MB (largest worker) | seconds by step |",
             "|---|---:|---:|---:|---|"]
    for label, r in f.items():
        steps = ", ".join(f"{k} {v:.1f}" for k, v in r["timings"].items())
        worker = f" ({r['children_peak_rss_mb']:.0f})" if "engine" in label else ""
        lines.append(f"| {label} | {r['docs_in'] / r['seconds']:,.0f} | "
                     f"{r['mb'] / r['seconds']:.2f} | {r['peak_rss_mb']:.0f}{worker} | {steps} |")
    for label, a in res["anchor"].items():
        if "error" in a:
            lines.append(f"| anchor: datatrove, {label} | - | - | - | {a['error']} |")
            continue
        mb = res["corpus"]["bytes"] / 1e6 * anchor_files / files
        steps = ", ".join(f"{k} {v:.1f}" for k, v in a["seconds"].items())
        lines.append(f"| anchor: datatrove, {label} ({anchor_files} file) | "
                     f"{a['docs_in'] / a['total_s']:,.0f} | {mb / a['total_s']:.2f} | | {steps} |")
    e1, e2 = f.get("engine, 1 worker"), f.get("engine, 2 workers")
    if e1 and e2:
        lines.append(f"\nScaling 1 -> 2 workers: {e1['seconds'] / e2['seconds']:.2f}x whole "
                     f"stage; step 1 (rules, signatures) "
                     f"{e1['timings']['1_filter'] / e2['timings']['1_filter']:.2f}x.")
    a1, a2 = res["anchor"].get("1 worker"), res["anchor"].get("2 workers")
    if a1 and a2 and "error" not in a1 and "error" not in a2:
        lines.append(f"Anchor scaling: {a1['total_s'] / a2['total_s']:.2f}x.")
    lines.append(f"Outputs byte-identical (in process, 1 and 2 workers): {res['identical']}.")
    base = f.get("in memory (filter_documents), baseline")
    a1 = res["anchor"].get("1 worker")
    if base:
        per = {k: (r["mb"] / r["seconds"]) / (base["mb"] / base["seconds"])
               for k, r in f.items() if "baseline" not in k}
        lines.append("Per-process MB/s against the baseline: " + ", ".join(
            f"{k} {v / (2 if '2 workers' in k else 1):.2f}x" for k, v in per.items())
            + " (target >= 3x).")
    if a1 and "error" not in a1:
        anchor_mb_s = res["corpus"]["bytes"] / 1e6 * anchor_files / files / a1["total_s"]
        ours = f["in process"]["mb"] / f["in process"]["seconds"]
        lines.append(f"In process against the anchor's 1 worker: {ours / anchor_mb_s:.0f}x "
                     f"(target >= 30x).")
    t = res["tokenize"]
    lines.append(f"Tokenize ({t['mb']:.0f} MB): ours {t['ours_tokens_per_s']:,.0f} tokens/s, "
                 f"raw encode_batch {t['raw_tokens_per_s']:,.0f}: {t['ratio']:.2f}x "
                 f"(target >= 0.8x).")
    keys = [k for k in next(iter(res["recall"].values())) if k not in
            ("originals_dropped", "exact_copies_dropped")]
    lines += ["", "| near-copy recall (share of words edited) | " + " | ".join(keys) +
              " | originals dropped |"]
    lines.append("|---|" + "---:|" * (len(keys) + 1))
    for label, rec in res["recall"].items():
        lines.append(f"| {label} | " + " | ".join(
            f"{rec[k]['recall']:.1%} (n={rec[k]['n']:,})" for k in keys) +
            f" | {rec['originals_dropped']:.2%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

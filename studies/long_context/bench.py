"""Stage bench: streaming passkey retrieval at 1K-16K+ tokens in bounded memory.

For every trained variant and every length in study.bench.lengths, a fresh interpreter
loads the model, streams one passkey prompt of that length in study.eval.stream_chunk
pieces with the state carried and decodes the key; it reports its peak resident memory
(ru_maxrss), the bytes of the carried state (attention cache bounded by the window,
memory fixed-size) and the wall time. Writes studies/long_context/metrics/bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from nlrepro.errors import cli_main
from nlrepro.io import atomic_path
from nlrepro.train.config import run_name
from studies.long_context import config as C


def measure_one(ckpt: Path, length: int, chunk: int, threads: int) -> dict:
    """In this process: stream one passkey prompt of ``length`` tokens, decode, measure."""
    from nlrepro.eval.retrieval import build_probes, state_bytes
    from nlrepro.eval.scorer import ModelScorer
    from nlrepro.eval.runner import load_checkpoint_model
    torch.set_num_threads(threads)
    lm = load_checkpoint_model(ckpt, C.TOKENIZER)
    scorer = ModelScorer(lm.model, lm.tokenizer, lm.teach_scale, max_len=10**9, batch_size=1,
                         stream_chunk=chunk)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    probe = build_probes(scorer.encode, [length - 40], [0.0], 1, 0)[0]
    ids = probe.prompt
    t0 = time.monotonic()
    with torch.inference_mode():
        _, state = scorer.stream(torch.tensor([ids]), last_only=True)
    gen, _ = scorer.greedy_after(torch.tensor([ids]), [scorer.encode(probe.doc.answer)], 7)
    return {"length": len(ids), "seconds": time.monotonic() - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": base / 1024, "state_bytes": state_bytes(state),
            "generated": scorer.decode(gen[0])}


@cli_main
def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m studies.long_context.bench")
    ap.add_argument("--one", nargs=2, metavar=("CKPT", "LENGTH"))
    args = ap.parse_args(argv)
    params, study = C.load()
    if args.one:
        print(json.dumps(measure_one(Path(args.one[0]), int(args.one[1]),
                                     study.eval.stream_chunk, study.eval.threads)))
        return
    out = {"stream_chunk": study.eval.stream_chunk, "window": C.window(params), "runs": {}}
    for variant in params.train.variants:
        name = run_name(variant, params.train.seeds[0])
        rows = []
        for length in study.bench.lengths:
            proc = subprocess.run([sys.executable, "-m", "studies.long_context.bench", "--one",
                                   str(C.MODELS / f"{name}.pt"), str(length)],
                                  capture_output=True, text=True, env=os.environ.copy(), check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"study bench {name} {length}: {rows[-1]['peak_rss_mb']:.0f} MB peak, "
                  f"state {rows[-1]['state_bytes'] / 2**20:.2f} MiB, {rows[-1]['seconds']:.1f} s")
        out["runs"][variant] = rows
        out["runs"][variant + "_peak_growth_mb"] = rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]
    with atomic_path(C.METRICS / "bench.json") as tmp:
        tmp.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

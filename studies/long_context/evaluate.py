"""Stage evaluate@<variant>: the retrieval grid (distance x depth, exact greedy decoding,
Wilson intervals, key log-likelihood), the ablation with every in-context update off
(teach scale 0), and the trace of memory update norms and gate values along one haystack.

Writes studies/long_context/metrics/eval/<run>.json and <run>.records.jsonl.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from nlrepro.errors import cli_main
from nlrepro.eval.retrieval import (build_probes, evaluate_probes, grid_metrics,
                                    trace_haystack)
from nlrepro.eval.runner import load_checkpoint_model
from nlrepro.eval.scorer import ModelScorer
from nlrepro.io import atomic_path
from nlrepro.train.config import run_name
from studies.long_context import config as C


def evaluate(ckpt: Path, params, study, log=print) -> tuple[dict, list[dict]]:
    ev = study.eval
    lm = load_checkpoint_model(ckpt, C.TOKENIZER)
    w, dists = C.window(params), C.distances(params, study)
    scorer = ModelScorer(lm.model, lm.tokenizer, lm.teach_scale, max_len=10**9,
                         batch_size=ev.batch_size, stream_chunk=ev.stream_chunk)
    t0 = time.monotonic()
    probes = build_probes(scorer.encode, dists, ev.depths, ev.samples, params.seed)
    records = evaluate_probes(scorer, probes)
    metrics = grid_metrics(records, w)
    log(f"study eval {lm.run.variant}: acc by distance " + ", ".join(
        f"{d}:{v['acc']:.2f}" for d, v in metrics["acc_by_distance"].items()))
    out = {"variant": lm.run.variant, "seed": lm.run.seed, "teach_scale": lm.teach_scale,
           "steps": lm.step, "window": w, "distances": dists, "depths": list(ev.depths),
           "samples": ev.samples, "grid": metrics}
    if ev.ablation_samples and lm.run.variant != "transformer":
        off = ModelScorer(lm.model, lm.tokenizer, 0.0, max_len=10**9,
                          batch_size=ev.batch_size, stream_chunk=ev.stream_chunk)
        ab = build_probes(off.encode, dists, ev.depths[:1], ev.ablation_samples, params.seed)
        out["ablation_updates_off"] = grid_metrics(evaluate_probes(off, ab), w)
        on = grid_metrics([r for r in records if r["depth"] == ev.depths[0]
                           and r["sample"] < ev.ablation_samples], w)
        out["ablation_updates_on_same_probes"] = on
    trace_probe = build_probes(scorer.encode, [max(1, int(round(ev.trace_distance_w * w)))],
                               ev.depths[:1], 1, params.seed + 1)[0]
    out["trace"] = {"distance": trace_probe.distance, "fact_pos": trace_probe.doc.fact_pos,
                    "rows": trace_haystack(lm.model, trace_probe.prompt, lm.teach_scale, w)}
    out["seconds"] = time.monotonic() - t0
    out["lineage"] = {"checkpoint_sha256": lm.checkpoint_sha256, "config_hash": lm.config_hash,
                      "tokenizer_sha256": lm.tokenizer_sha256}
    return out, records


@cli_main
def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m studies.long_context.evaluate")
    ap.add_argument("variant")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    params, study = C.load()
    torch.set_num_threads(study.eval.threads)
    seed = params.train.seeds[0] if args.seed is None else args.seed
    name = run_name(args.variant, seed)
    out, records = evaluate(C.MODELS / f"{name}.pt", params, study)
    dest = C.METRICS / "eval"
    with atomic_path(dest / f"{name}.records.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    with atomic_path(dest / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

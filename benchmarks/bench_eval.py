"""Benchmark of the evaluate stage on the tiny preset.

Prints, per variant, log-likelihood requests per second batched (``eval.batch_size``)
versus one at a time, with their ratio, then the wall time of the full offline suite as
params.yaml's ``eval`` section sizes it (target: about a minute per variant on 2 cores).
Models have random weights of the tiny preset (speed does not depend on the weights; a
trained checkpoint is used instead where models/<variant>.pt exists and --trained is
given). Needs the data stages' outputs (data/tokenizer, data/shards).
Run: `PYTHONPATH=src python benchmarks/bench_eval.py`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nlrepro.config import load_params
from nlrepro.data.tokenizer import load_tokenizer
from nlrepro.eval.offline import heldout_documents, last_word_examples
from nlrepro.eval.runner import load_checkpoint_model, run_offline
from nlrepro.eval.scorer import ModelScorer
from nlrepro.model.lm import build_model

TOKENIZER = Path("data/tokenizer/tokenizer.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["transformer", "titan", "hope"])
    ap.add_argument("--requests", type=int, default=48, help="LAMBADA-style requests timed")
    ap.add_argument("--threads", type=int, help="torch threads (default: eval.threads)")
    ap.add_argument("--trained", action="store_true", help="use models/<variant>.pt")
    ap.add_argument("--skip-suite", action="store_true")
    args = ap.parse_args()

    params = load_params()
    cfg = params.eval
    threads = args.threads or cfg.threads
    if threads:
        torch.set_num_threads(threads)
    tokenizer = load_tokenizer(TOKENIZER)
    docs = heldout_documents("data/shards", cfg.sources)
    requests = [ex.requests[0] for _, ex in
                last_word_examples(docs, cfg.last_word.__class__(samples=args.requests), params.seed)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{len(requests)} requests of ~{cfg.last_word.context_chars} characters")

    for variant in args.variants:
        if args.trained:
            model = load_checkpoint_model(Path("models") / f"{variant}-s0.pt", TOKENIZER, variant).model
        else:
            torch.manual_seed(params.seed)
            model = build_model(params.model_for(variant), tokenizer.get_vocab_size(),
                                params.in_context()).eval()
        n_params = sum(p.numel() for p in model.parameters())
        rates = {}
        for batch_size in (cfg.batch_size, 1):
            scorer = ModelScorer(model, tokenizer, params.teach_scale, 256, batch_size,
                                 cfg.stream_chunk)
            scorer.loglikelihood(requests[:2])  # warm-up
            start = time.perf_counter()
            scorer.loglikelihood(requests)
            rates[batch_size] = len(requests) / (time.perf_counter() - start)
        print(f"{variant:<12} {n_params / 1e6:5.2f}M params  loglikelihood: "
              f"batched({cfg.batch_size}) {rates[cfg.batch_size]:7.1f} req/s, "
              f"one at a time {rates[1]:6.1f} req/s, ratio {rates[cfg.batch_size] / rates[1]:.1f}x")
        if args.skip_suite:
            continue
        scorer = ModelScorer(model, tokenizer, params.teach_scale, 256, cfg.batch_size,
                             cfg.stream_chunk)
        start = time.perf_counter()
        _, records, _, seconds = run_offline(scorer, docs, cfg, params.seed, variant)
        total = time.perf_counter() - start
        parts = ", ".join(f"{name} {s:.1f}s ({len(records[name])})" for name, s in seconds.items())
        print(f"{variant:<12} offline suite {total:6.1f}s: {parts}")


if __name__ == "__main__":
    main()

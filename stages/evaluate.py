"""Stage evaluate@<variant>-<seed>: models/<run>.pt -> metrics/eval/<run>.json + records.

`python -m stages.evaluate hope --seed 1` scores one trained run (``hope-s1``; without
--seed the first of ``train.seeds``) on the offline suite (held-out
perplexity, last word, real-vs-distractor continuation, passkey retrieval) and on the
zero-shot tasks listed in `eval.tasks`, and writes per-example records to
metrics/eval/<run>/<task>.jsonl. Every run is scored on the same items: the evaluation's
sampling follows the top-level seed, not the training seed. See docs/EVAL_STAGE.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from nlrepro.config import load_params, params_hash
from nlrepro.errors import NLReproError, cli_main
from nlrepro.eval.runner import EvalPaths, evaluate_run, write_results
from nlrepro.model.config import VARIANTS
from nlrepro.train.config import run_name

MODELS = Path("models")
TOKENIZER = Path("data/tokenizer/tokenizer.json")
SHARDS = Path("data/shards")
OUT = Path("metrics/eval")


@cli_main
def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.evaluate")
    ap.add_argument("variant")
    ap.add_argument("--seed", type=int, help="training seed of the run (default: the first "
                                             "of train.seeds)")
    args = ap.parse_args(argv)
    if args.variant not in VARIANTS:
        raise NLReproError(f"evaluate: unknown variant '{args.variant}' (expected one of "
                           f"{', '.join(VARIANTS)})")
    params = load_params()
    seed = params.train.seeds[0] if args.seed is None else args.seed
    run = run_name(args.variant, seed)
    if params.eval.threads:
        torch.set_num_threads(params.eval.threads)
    torch.manual_seed(params.seed)
    paths = EvalPaths(MODELS / f"{run}.pt", TOKENIZER, SHARDS)
    summary, records = evaluate_run(params.eval, paths, args.variant, seed, params.seed,
                                    params_hash(params))
    write_results(summary, records, OUT / run, OUT / f"{run}.json")
    offline = summary["offline"]
    print(f"evaluate {run}: ppl/token {offline['perplexity']['token_perplexity']:.1f}, "
          f"last word acc {offline['last_word']['acc']:.3f}, choice acc_norm "
          f"{offline['choice']['acc_norm']:.3f}, passkey acc {offline['passkey']['acc']:.3f} "
          f"({summary['lineage']['wall_time_s']['total']:.0f}s)")


if __name__ == "__main__":
    main(sys.argv[1:])

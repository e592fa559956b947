"""Stage train@<variant>: the library's trainer (nlrepro.train.run.train_run) on the
study's rows, with the study's params (every variant on the same sliding window).

Writes studies/long_context/models/<variant>-s<seed>.pt and metrics/train/<run>/;
resumable checkpoints go to studies/long_context/checkpoints/ (outside DVC's outputs).
"""
from __future__ import annotations

import argparse
import sys

from nlrepro.config import params_hash
from nlrepro.errors import NLReproError, cli_main
from nlrepro.model.config import VARIANTS
from nlrepro.train import distributed as D
from nlrepro.train.checkpoint import DataIdentity, RunConfig
from nlrepro.train.config import run_name
from nlrepro.train.data import token_manifest
from nlrepro.train.guardrails import die_with_parent
from nlrepro.train.run import RunPaths, train_run
from studies.long_context import config as C


def run_config(params, variant: str, seed: int) -> RunConfig:
    return RunConfig(variant=variant, seed=seed, model=params.model_for(variant),
                     in_context=params.in_context(), teach_scale=params.teach_scale,
                     teach=params.teach, grad_clip=params.clip.grad_norm, train=params.train,
                     data=DataIdentity.from_manifest(token_manifest(C.TOKENS)))


@cli_main
def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m studies.long_context.train")
    ap.add_argument("variant")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    die_with_parent()
    if args.variant not in VARIANTS:
        raise NLReproError(f"study train: unknown variant {args.variant!r}")
    params, _ = C.load()
    seed = params.train.seeds[0] if args.seed is None else args.seed
    if params.train.nproc != 1:
        raise NLReproError("study train: train.nproc must be 1")
    info = D.init(params.train.device, params.train.backend)
    name = run_name(args.variant, seed)
    run = run_config(params, args.variant, seed)
    paths = RunPaths(tokens=C.TOKENS, checkpoints=C.CHECKPOINTS, final=C.MODELS / f"{name}.pt",
                     metrics=C.METRICS / "train" / name)
    train_run(run, paths, info, {"params_hash": params_hash(params), "study": "long_context"})


if __name__ == "__main__":
    main(sys.argv[1:])

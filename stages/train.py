"""Stage train@<variant>-<seed>: data/tokens -> models/<run>.pt + metrics/train/<run>/.

`python -m stages.train hope --seed 1` trains one (variant, seed) run, named ``hope-s1``
(``train.run_name``); without --seed it trains the first of ``train.seeds``. The seed
sets the model init and the data order; the data stages keep the top-level seed. With `train.nproc > 1` it re-launches
itself under `torchrun --standalone` (DDP; FSDP2 with `train.fsdp`); started by torchrun
directly (e.g. several nodes) it joins the given process group. A rerun after a crash
resumes from checkpoints/<run>-<config hash>/last.pt (FSDP: the shard directory last.dcp); `--resume PATH` resumes from
an explicit checkpoint, which must be of the same config.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nlrepro.config import load_params, params_hash
from nlrepro.errors import NLReproError, cli_main
from nlrepro.model.config import VARIANTS
from nlrepro.train import distributed as D
from nlrepro.train.checkpoint import DataIdentity, RunConfig
from nlrepro.train.config import run_name
from nlrepro.train.data import token_manifest
from nlrepro.train.guardrails import die_with_parent
from nlrepro.train.run import RunPaths, check_memory, train_run

TOKENS = Path("data/tokens")
CHECKPOINTS = Path("checkpoints")
MODELS = Path("models")
METRICS = Path("metrics/train")


@cli_main
def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.train")
    ap.add_argument("variant")
    ap.add_argument("--seed", type=int, help="training seed (default: the first of train.seeds)")
    ap.add_argument("--resume", type=Path, help="explicit checkpoint to resume (same config)")
    ap.add_argument("--until", type=int, help="stop after this step (time-boxed jobs)")
    args = ap.parse_args(argv)
    # No orphans: if dvc (or the torchrun agent) dies, so does this process.
    die_with_parent()
    if args.variant not in VARIANTS:
        raise NLReproError(f"train: unknown variant '{args.variant}' (expected one of "
                           f"{', '.join(VARIANTS)})")
    params = load_params()
    cfg = params.train
    if args.seed is None:
        args.seed = cfg.seeds[0]
    elif args.seed < 0:
        raise NLReproError(f"train: --seed must be >= 0, got {args.seed}")
    D.launch("stages.train", argv, cfg.nproc, cfg.device)   # returns unless it re-executes

    info = D.init(cfg.device, cfg.backend)
    try:
        name, model = run_name(args.variant, args.seed), params.model_for(args.variant)
        check_memory(name, model, cfg, params.data.tokenizer.vocab_size,
                     params.data.tokenize.row_len, info)
        run = RunConfig(variant=args.variant, seed=args.seed, model=model,
                        in_context=params.in_context(), teach_scale=params.teach_scale,
                        teach=params.teach, grad_clip=params.clip.grad_norm, train=cfg,
                        data=DataIdentity.from_manifest(token_manifest(TOKENS)))
        paths = RunPaths(tokens=TOKENS, checkpoints=CHECKPOINTS, final=MODELS / f"{name}.pt",
                         metrics=METRICS / name)
        train_run(run, paths, info, {"params_hash": params_hash(params)}, args.resume,
                  args.until)
    except BaseException:
        D.shutdown(synced=False)
        raise
    D.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])

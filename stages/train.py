"""Stage train@<variant>-<seed>: data/tokens -> models/<run>.pt + metrics/train/<run>/.

`python -m stages.train hope --seed 1` trains one (variant, seed) run, named ``hope-s1``
(``train.run_name``); without --seed it trains the first of ``train.seeds``. The seed
sets the model init and the data order; the data stages keep the top-level seed. With `train.nproc > 1` it re-launches
itself under `torchrun --standalone` (DDP; FSDP2 with `train.fsdp`); started by torchrun
directly (e.g. several nodes) it joins the given process group. A rerun after a crash
resumes from checkpoints/<run>-<config hash>/last.pt; `--resume PATH` resumes from
an explicit checkpoint, which must be of the same config.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import torch

from nlrepro.config import Params, load_params, section_hash
from nlrepro.configlib import to_dict
from nlrepro.errors import NLReproError, cli_main
from nlrepro.model import build_model
from nlrepro.train import distributed as D
from nlrepro.train import checkpoint as ckpt
from nlrepro.train import resources as R
from nlrepro.train.checkpoint import config_hash, seed_everything
from nlrepro.train.config import VARIANTS, run_name
from nlrepro.train.data import open_rows, token_manifest
from nlrepro.train.guardrails import RunLock, die_with_parent
from nlrepro.train.logger import RunLogger
from nlrepro.train.loop import RunSpec, Trainer

TOKENS = Path("data/tokens")


def run_config(params: Params, variant: str, seed: int, manifest: dict) -> dict:
    """Everything that determines the trained weights (hashed into every checkpoint)."""
    train = to_dict(params.train)
    for key in ("variants", "seeds", "threads", "anomaly", "eval_every", "eval_batches", "log_every",
                "ckpt_every", "max_skips", "device", "backend"):
        train.pop(key)
    return {"variant": variant, "seed": seed, "teach_scale": params.teach_scale,
            "teach_clip": params.teach_clip, "teach": to_dict(params.teach),
            "clip": to_dict(params.clip), "model": to_dict(params.model_for(variant)),
            "train": train,
            "data": {"tokenizer_sha256": manifest["tokenizer_sha256"],
                     "vocab_size": manifest["vocab_size"], "row_len": manifest["row_len"],
                     "train_rows": manifest["splits"]["train"]["rows"]}}


def check_memory(params: Params, variant: str, run: str, info: D.DistInfo) -> None:
    """Fail before allocating when even a lower bound of the run's memory does not fit
    (train/resources.py); the model is counted on the meta device, which allocates
    nothing."""
    cfg = params.train
    with torch.device("meta"):
        meta = build_model(params.model_for(variant), params.data.tokenizer.vocab_size,
                           params.teach, params.clip, params.teach_clip)
    n_params = sum(p.numel() for p in meta.parameters())
    mcfg = meta.cfg
    needed = R.estimate_bytes(n_params, cfg.batch_size // info.world,
                              params.data.tokenize.row_len - 1, mcfg.d_model, mcfg.n_layers,
                              info.world, cfg.fsdp, cfg.activation_checkpointing)
    on_host = 1 if info.device.type == "cuda" else min(info.world, cfg.nproc)
    R.check_fits(run, needed, R.available_bytes(info.device), n_params, on_host)


def relaunch_under_torchrun(variant: str, argv: list[str], nproc: int) -> None:
    """Replace this process by `torchrun --standalone` running the same stage."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "stages.train", variant, *argv]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)


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
    if cfg.nproc > 1 and not D.under_torchrun():
        allowed = D.max_procs(D.pick_device(cfg.device))
        if cfg.nproc > allowed:
            raise NLReproError(f"train.nproc: {cfg.nproc} processes requested but this "
                               f"machine allows at most {allowed}")
        relaunch_under_torchrun(args.variant, argv[1:], cfg.nproc)

    info = D.init(cfg.device, cfg.backend)
    try:
        train(params, args, info)
    finally:
        D.shutdown()


def train(params: Params, args, info: D.DistInfo) -> None:
    cfg = params.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(args.seed)  # the same initial weights on every rank
    check_memory(params, args.variant, run_name(args.variant, args.seed), info)
    manifest = token_manifest(TOKENS)
    train_rows, val_rows = open_rows(TOKENS, "train"), open_rows(TOKENS, "val")
    model = build_model(params.model_for(args.variant), manifest["vocab_size"], params.teach,
                        params.clip, params.teach_clip).to(info.device)
    n_params = sum(p.numel() for p in model.parameters())
    if cfg.activation_checkpointing:
        D.apply_activation_checkpointing(model)
    wrapped = D.wrap(model, info, cfg.fsdp)

    config = run_config(params, args.variant, args.seed, manifest)
    run = run_name(args.variant, args.seed)
    run_dir = Path("checkpoints") / f"{run}-{config_hash(config)}"
    spec = RunSpec(train=cfg, teach=params.teach, teach_scale=params.teach_scale,
                   grad_clip=params.clip.grad_norm, seed=args.seed, config=config,
                   out_dir=Path("metrics/train") / run,
                   ckpt_path=run_dir / "last.pt", final_path=Path("models") / f"{run}.pt",
                   extra={"params_hash": section_hash(params), "n_params": n_params})
    trainer = Trainer(spec, model, train_rows, val_rows, info, wrapped)
    with contextlib.ExitStack() as stack:
        if info.is_main:   # one writer per run directory: a second trainer fails at once
            stack.enter_context(RunLock(run_dir, run))
        _train_locked(trainer, spec, args, info, run, n_params)


def _resume_from(spec: RunSpec, explicit: Path | None) -> Path | None:
    """``--resume PATH`` (verified when it has a hash record), else the run's last intact
    checkpoint (a corrupt latest one falls back to the previous, said in one line)."""
    say = lambda msg: print(f"train: {msg}", file=sys.stderr)  # noqa: E731
    if explicit is None:
        return ckpt.pick_resumable(spec.ckpt_path, say)
    if ckpt.has_record(explicit):
        problem = ckpt.verify(explicit)
        if problem is not None:
            raise NLReproError(f"{explicit}: {problem}")
    return explicit


def _train_locked(trainer: Trainer, spec: RunSpec, args, info: D.DistInfo, run: str,
                  n_params: int) -> None:
    cfg = spec.train
    source = _resume_from(spec, args.resume)
    resumed = source is not None and trainer.resume(source)
    if resumed and info.is_main:
        print(f"train {run}: resuming from step {trainer.step}", file=sys.stderr)
    logger = (RunLogger(run, spec.out_dir, spec.ckpt_path.parent / "log.jsonl",
                        trainer.step if resumed else None) if info.is_main else None)
    start = time.monotonic()
    try:
        val = trainer.run(until=args.until, logger=logger)
    finally:
        if logger:
            logger.close()
    if trainer.step < cfg.steps:  # stopped early on purpose: keep the checkpoint
        trainer.save(spec.ckpt_path)
        return
    trainer.save(spec.final_path, with_optimizer=False)
    if info.is_main:  # finished: a later forced rerun starts afresh (the log stays)
        ckpt.remove_resumable(spec.ckpt_path)
    if logger:
        logger.finish(trainer.summary(n_params, time.monotonic() - start))
        print(f"train {run}: done, val loss {val['loss']:.4f} "
              f"(ppl {val['ppl']:.1f}), skipped {trainer.skips.total} steps")


if __name__ == "__main__":
    main(sys.argv[1:])

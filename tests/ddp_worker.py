"""Run a few training steps of a small hope model, alone or as one rank under torchrun,
and write the losses, the rows each rank read and a digest of the final weights to
OUT/rank<r>.json. ``--until K`` stops after step K and saves a resumable checkpoint to
OUT/last.pt (FSDP: the sharded OUT/last.dcp); ``--resume PATH`` continues from one."""
import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from nlrepro.model.config import InContextConfig
from nlrepro.model.lm import build_model
from nlrepro.model.presets import model_config
from nlrepro.train import distributed as D
from nlrepro.train.checkpoint import DataIdentity, RunConfig
from nlrepro.train.config import TeachConfig, TrainConfig
from nlrepro.train.loop import RunSpec, Trainer

SMALL = {"preset": "tiny", "type": "hope", "d_model": 32, "n_layers": 2, "n_heads": 2,
         "mlp_width": 64, "memory": {"chunk": 8}, "selfmod": {"chunk": 8},
         "cms": {"levels": [{"chunk": 8, "width": 16}, {"chunk": 16, "width": 16}]}}


def main(out: Path, steps: int, fsdp: bool = False, until: int | None = None,
         resume: Path | None = None) -> None:
    info = D.init("cpu", "gloo")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    teach = TeachConfig(warmup_steps=0, decay_start=None)
    guards = InContextConfig(residual_clip=4.0, inner_clip=1.0, teach_clip=1.0)
    model_cfg = model_config(SMALL)
    model = build_model(model_cfg, 64, guards)
    rows = np.random.default_rng(0).integers(0, 64, size=(32, 33)).astype(np.uint16)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1.0e-2, warmup_steps=0, eval_every=10**6,
                      ckpt_every=10**6, nproc=info.world, fsdp=fsdp)
    run = RunConfig(variant="hope", seed=0, model=model_cfg, in_context=guards, teach_scale=0.5,
                    teach=teach, grad_clip=1.0, train=cfg, data=DataIdentity("0" * 64, 64, 33, 32))
    last = out / ("last.dcp" if fsdp else "last.pt")
    spec = RunSpec(run=run, out_dir=out, ckpt_path=last, final_path=out / "final.pt")
    trainer = Trainer(spec, model, rows, rows[:4], info, D.wrap(model, info, fsdp))
    if resume is not None:
        assert trainer.resume(resume)
    losses, seen = [], []
    out.mkdir(parents=True, exist_ok=True)
    while trainer.step < (until or steps):
        seen.append(trainer.batches.indices(trainer.step))
        losses.append(trainer.train_step()["loss"])
    if until is not None:
        trainer.save(last)
    weights, _ = D.full_state(model, None, fsdp)   # collective under FSDP
    digest = hashlib.sha256(b"".join(weights[k].numpy().tobytes() for k in sorted(weights)))
    (out / f"rank{info.rank}.json").write_text(json.dumps(
        {"losses": losses, "rows": seen, "weights": digest.hexdigest(), "step": trainer.step}))
    D.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("steps", type=int)
    parser.add_argument("mode", nargs="?", choices=["ddp", "fsdp"], default="ddp")
    parser.add_argument("--until", type=int)
    parser.add_argument("--resume", type=Path)
    args = parser.parse_args()
    main(args.out, args.steps, args.mode == "fsdp", args.until, args.resume)

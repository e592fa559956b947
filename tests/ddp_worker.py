"""Run a few training steps of a small hope model, alone or as one rank under torchrun,
and write the losses and the rows each rank read to OUT/rank<r>.json."""
import json
import sys
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


def main(out: Path, steps: int, fsdp: bool = False) -> None:
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
    spec = RunSpec(run=run, out_dir=out, ckpt_path=out / "last.pt", final_path=out / "final.pt")
    trainer = Trainer(spec, model, rows, rows[:4], info, D.wrap(model, info, fsdp))
    losses, seen = [], []
    for _ in range(steps):
        seen.append(trainer.batches.indices(trainer.step))
        losses.append(trainer.train_step()["loss"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{info.rank}.json").write_text(json.dumps({"losses": losses, "rows": seen}))
    D.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), fsdp=len(sys.argv) > 3 and sys.argv[3] == "fsdp")

"""Sharded, resumable checkpoints of FSDP2 runs through ``torch.distributed.checkpoint``.

Under FSDP2 every rank holds a shard of the parameters and of the optimiser state.
Gathering them on rank 0 for ``torch.save`` (what the single-process and DDP checkpoints
do) needs the whole model in one process's memory; here each rank writes its own shards
instead (DCP's planner, no gathering), into one directory:

    last.dcp/
        __0_0.distcp, __1_0.distcp, .metadata    model and optimiser shards (DCP)
        extra.pt                                 config, progress, RNG states, lineage (rank 0)
    last.dcp.sha256                              size and hash of every file in it

The directory is written under ``.last.dcp.tmp`` and renamed into place by rank 0 once every
rank has written, so a crash leaves either the previous checkpoint or the new one, never
a mix. ``checkpoint.install`` keeps the previous intact one as ``last.prev.dcp``, and
``checkpoint.verify`` checks the record on load, as for single-file checkpoints.

A directory on a filesystem every rank sees is assumed (a shared filesystem on a
cluster, the local disk on one machine).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

EXTRA = "extra.pt"


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def temp_dir(path: Path) -> Path:
    """Where every rank writes before rank 0 renames it to ``path`` (one name for all)."""
    return path.with_name(f".{path.name}.tmp")


def save(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
         is_main: bool, finish: Callable[[Path], None]) -> None:
    """Every rank writes its shards into the temporary directory; then rank 0 calls
    ``finish(tmp)``, which adds ``extra.pt`` and installs it at ``path`` (rotation and
    size-and-hash record: ``checkpoint.TrainingState.save``). Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    path = Path(path)
    tmp = temp_dir(path)
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)   # a crashed save's leftovers
        tmp.mkdir(parents=True)
    _barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=tmp)
    _barrier()
    if is_main:
        finish(tmp)
    _barrier()


def load(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Read every rank's shards back into ``model`` and ``optimizer`` (resharded to this
    run's layout by DCP) and return ``extra``. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = Path(path)
    # get_state_dict gives the optimiser its state tensors (a zero-lr step) so that
    # DCP has somewhere to load them.
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])
    return torch.load(path / EXTRA, map_location="cpu", weights_only=False)


def is_sharded(path: str | Path) -> bool:
    return Path(path).is_dir()

"""Distribution as a wrapper around an unchanged model (torchtitan's rule): DDP or FSDP2
over ranks started by torchrun, activation checkpointing applied from outside."""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from nlrepro.errors import NLReproError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def pick_device(kind: str) -> torch.device:
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise NLReproError("train.device: cuda requested but no GPU is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def max_procs(device: torch.device) -> int:
    return torch.cuda.device_count() if device.type == "cuda" else (os.cpu_count() or 1)


def launch(module: str, argv: list[str], nproc: int, device_kind: str) -> None:
    """With ``nproc`` > 1 and not yet under torchrun, replace this process by
    ``torchrun --standalone --nproc_per_node=<nproc> -m <module> <argv>`` (DDP on this
    machine); otherwise return and let the caller run as it is."""
    if nproc <= 1 or under_torchrun():
        return
    allowed = max_procs(pick_device(device_kind))
    if nproc > allowed:
        raise NLReproError(f"train.nproc: {nproc} processes requested but this machine allows "
                           f"at most {allowed}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", module, *argv]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)


def init(device_kind: str, backend: str) -> DistInfo:
    """Join the process group when started by torchrun; otherwise a single process."""
    device = pick_device(device_kind)
    if not under_torchrun():
        return DistInfo(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, device)


def shutdown(synced: bool = True) -> None:
    """Leave the process group. ``synced``: every rank got here normally, so meet at a
    barrier first; gloo aborts a rank (SIGABRT, "terminate called without an active
    exception") when its peer tears the connection down while it is still closing its own.
    After an error the other ranks may never arrive, so skip the barrier."""
    if dist.is_initialized():
        if synced:
            dist.barrier()
        dist.destroy_process_group()


def all_true(flag: bool, info: DistInfo) -> bool:
    """Logical AND of ``flag`` over ranks (every rank skips a step together)."""
    if not info.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def mean_over_ranks(value: float, info: DistInfo) -> float:
    if not info.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block in backward instead of storing its activations."""
    for block in model.blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def compile_model(net: nn.Module) -> nn.Module:
    """``train.compile``: ``torch.compile`` of the (wrapped) model with static shapes
    (training rows never change length). Dynamo unrolls the chunk recurrence into one
    graph, so compilation grows with chunks x layers (docs/PERFORMANCE.md)."""
    return torch.compile(net, dynamic=False)


def wrap(model: nn.Module, info: DistInfo, fsdp: bool) -> nn.Module:
    """DDP (or FSDP2 when asked) across ranks; the model itself is unchanged. FSDP2 also
    applies to a process group of one (e.g. one GPU under torchrun), where it changes
    nothing but runs the sharded code paths."""
    if fsdp and dist.is_initialized():
        from torch.distributed.fsdp import fully_shard

        # One FSDP unit per block, then the root (embedding, final norm): each block
        # builds its fast-weight state from its own slow weights and absorbs the teach
        # signal inside its forward, so only the running block's weights are gathered.
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    if not info.active:
        return model
    ids = [info.local_rank] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, fsdp: bool
               ) -> tuple[dict, dict | None]:
    """Unsharded model and optimiser state (a collective under FSDP: call on every rank)."""
    if not fsdp:
        return model.state_dict(), optimizer.state_dict() if optimizer else None
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=opts)
    optim_state = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer else None
    return model_state, optim_state


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                    optim_state: dict, fsdp: bool) -> None:
    """Inverse of ``full_state`` (strict for the model)."""
    if not fsdp:
        model.load_state_dict(model_state, strict=True)
        optimizer.load_state_dict(optim_state)
        return
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    opts = StateDictOptions(full_state_dict=True, strict=True)
    set_model_state_dict(model, model_state, options=opts)
    set_optimizer_state_dict(model, optimizer, optim_state, options=opts)

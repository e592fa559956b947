"""Will the run fit? A lower bound of a training run's memory, checked before allocating.

``estimate_bytes`` counts what training must hold at least:

* parameter state: 16 bytes per parameter (float32 weights, gradients, AdamW's two
  moments), divided over the ranks under FSDP;
* activations kept for backward: ``ACTIVATION_FLOATS`` float32 values per token, per
  layer and per model width (queries, keys, values, attention output, the MLP's three
  projections, norms and residuals of one block; the memory variants keep more), or two
  per layer with activation checkpointing.

It is a lower bound (allocator slack, fast-weight states and temporaries come on top), so
the check fails only when even the bound exceeds the memory available (``MemAvailable``,
or the cgroup limit if smaller; free device memory on CUDA): one line with both numbers,
before the model is built, instead of a machine swapping for minutes.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nlrepro.errors import NLReproError

BYTES_PER_PARAM = 4 + 4 + 8
ACTIVATION_FLOATS = 16
GIB = 1024 ** 3


def estimate_bytes(n_params: int, batch_per_rank: int, seq_len: int, d_model: int,
                   n_layers: int, world: int = 1, fsdp: bool = False,
                   checkpointing: bool = False) -> int:
    state = n_params * BYTES_PER_PARAM // (world if fsdp else 1)
    per_token = (2 if checkpointing else ACTIVATION_FLOATS) * d_model * n_layers * 4
    return state + batch_per_rank * seq_len * per_token


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def available_bytes(device: torch.device) -> int | None:
    """Free memory for one rank: device memory on CUDA, else MemAvailable capped by the
    cgroup limit (None when the platform does not say)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                limit = _cgroup_limit()
                return min(avail, limit) if limit else avail
    except OSError:
        pass
    return None


def check_fits(name: str, needed: int, available: int | None, n_params: int,
               ranks_on_host: int = 1) -> None:
    """Fail with one line when ``ranks_on_host`` ranks of ``needed`` bytes each cannot fit."""
    if available is None:
        return
    total = needed * ranks_on_host
    if total > available:
        raise NLReproError(
            f"train {name}: needs at least {total / GIB:.1f} GiB ({n_params / 1e6:,.0f}M "
            f"parameters x {BYTES_PER_PARAM} bytes of weights, gradients and AdamW state, plus "
            f"activations{f', x {ranks_on_host} ranks' if ranks_on_host > 1 else ''}) but "
            f"{available / GIB:.1f} GiB are available; use a smaller model.preset or "
            f"train.batch_size, train.activation_checkpointing, or train.fsdp over more ranks")

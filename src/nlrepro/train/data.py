"""Batches from the packed token rows of stage tokenize.

The train order is a function of (seed, step, rank) only: global position ``p`` of the
stream of rows is row ``perm_e[p mod n]`` of epoch ``e = p // n``, with a seeded
permutation per epoch. Step ``s`` takes positions ``[s B, (s+1) B)`` of which rank ``r``
reads the contiguous ``r``-th share, so ranks read disjoint rows and a resumed run needs
only the step to continue exactly where it stopped.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from nlrepro.data.token_shards import ShardedRows, open_rows  # noqa: F401  (re-exported)
from nlrepro.errors import NLReproError


def token_manifest(token_dir: Path) -> dict:
    path = Path(token_dir) / "manifest.json"
    if not path.exists():
        raise NLReproError(f"{path}: not found (run the tokenize stage first)")
    return json.loads(path.read_text())


class TrainBatches:
    """``batch(step)`` -> int64 tensor (local_batch, row_len) for this rank."""

    def __init__(self, rows: ShardedRows | np.ndarray, global_batch: int, seed: int, rank: int = 0,
                 world: int = 1):
        self.rows, self.B, self.seed = rows, global_batch, seed
        self.local = global_batch // world
        self.offset = rank * self.local

    @lru_cache(maxsize=2)
    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.rows))

    def indices(self, step: int) -> list[int]:
        n = len(self.rows)
        start = step * self.B + self.offset
        return [int(self._perm(p // n)[p % n]) for p in range(start, start + self.local)]

    def batch(self, step: int) -> torch.Tensor:
        idx = self.indices(step)
        return torch.from_numpy(self.rows[idx].astype(np.int64))


def val_batches(rows: ShardedRows | np.ndarray, batch_size: int, max_batches: int | None):
    """Fixed validation batches: the first rows of the val split, in order."""
    n = len(rows) // batch_size
    if max_batches is not None:
        n = min(n, max_batches)
    for b in range(max(1, n)):
        chunk = rows[b * batch_size:(b + 1) * batch_size]
        yield torch.from_numpy(np.asarray(chunk, dtype=np.int64))

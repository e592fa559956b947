"""Token shards: the packed rows of a split as fixed-size ``.npy`` files plus an index.

Layout (written by stage tokenize)::

    data/tokens/manifest.json              the index: per split its shards, dtype, row_len
    data/tokens/<split>/rows-00000.npy     2-D (shard_rows, row_len) arrays, in stream order
    data/tokens/<split>/rows-00001.npy     ... (the last shard of a split may be shorter)

Concatenating a split's shards gives exactly the rows of the one ``<split>.npy`` the stage
wrote before the shards existed. ``RowWriter`` builds them from a stream of documents in
bounded memory (one shard buffer); ``open_split`` reads them back as one ``ShardedRows``,
a memory map per shard that indexes like the 2-D row array.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from nlrepro.errors import NLReproError
from nlrepro.io import sha256_file


# --- writing -------------------------------------------------------------------------------

class RowWriter:
    """Append documents (token arrays) to a split's eos-separated stream; every full shard
    of ``shard_rows`` rows is written as soon as it fills, so memory holds one shard.

    ``close()`` writes the last full rows and returns the split's index entry; the tail
    shorter than a row is dropped and counted, exactly as ``tokenize.pack`` does."""

    def __init__(self, out_dir: Path, split: str, row_len: int, shard_rows: int,
                 eos_id: int, dtype: np.dtype):
        self.out_dir, self.split, self.row_len = Path(out_dir), split, row_len
        self.dtype = np.dtype(dtype)
        self.eos = np.asarray([eos_id], dtype=self.dtype)
        self.buf = np.empty(shard_rows * row_len, dtype=self.dtype)  # the stream's open shard
        self.fill = 0
        self.tokens = 0
        self.shards: list[dict] = []

    def add(self, ids: np.ndarray) -> None:
        """Append one document and its end-of-text token."""
        self._append(np.asarray(ids, dtype=self.dtype))
        self._append(self.eos)

    def _append(self, ids: np.ndarray) -> None:
        pos = 0
        while pos < len(ids):  # a document longer than a shard spans several
            take = min(len(ids) - pos, len(self.buf) - self.fill)
            self.buf[self.fill:self.fill + take] = ids[pos:pos + take]
            self.fill += take
            pos += take
            if self.fill == len(self.buf):
                self._flush(self.fill // self.row_len)
        self.tokens += len(ids)

    def _flush(self, n_rows: int) -> None:
        """Write the first ``n_rows`` rows of the buffer as the next shard."""
        name = f"{self.split}/rows-{len(self.shards):05d}.npy"
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.save(fh, self.buf[:n_rows * self.row_len].reshape(n_rows, self.row_len))
        self.shards.append({"file": name, "rows": n_rows, "bytes": path.stat().st_size,
                            "sha256": sha256_file(path)})
        self.fill = 0

    def close(self) -> dict:
        """Write the last (partial) shard; return ``{tokens, rows, dropped_tail_tokens,
        dtype, row_len, shard_rows, shards}`` for the index."""
        tail = self.fill % self.row_len
        if self.fill >= self.row_len:
            self._flush(self.fill // self.row_len)
        rows = sum(s["rows"] for s in self.shards)
        return {"tokens": self.tokens, "rows": rows, "dropped_tail_tokens": tail,
                "dtype": str(self.dtype), "row_len": self.row_len,
                "shard_rows": len(self.buf) // self.row_len, "shards": self.shards}


# --- reading -------------------------------------------------------------------------------

class ShardedRows:
    """The rows of one split across its shards, indexed like one 2-D array: ``len``,
    ``.shape``, ``rows[i]``, ``rows[a:b]`` and ``rows[[i, j, ...]]`` return numpy arrays
    (copies of the rows asked for; nothing else is read).

    Shards are memory-mapped when first read and at most ``MAX_OPEN`` stay mapped (least
    recently used first out): every map holds a file descriptor, and a large corpus has
    more shards than a process may open files."""

    ndim = 2
    MAX_OPEN = 64

    def __init__(self, paths: list[Path], counts: list[int], row_len: int, dtype: str):
        self._paths = paths
        self._ends = np.cumsum(counts, dtype=np.int64)
        self._starts = self._ends - np.asarray(counts, dtype=np.int64)
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        self.dtype = np.dtype(dtype)
        self.shape = (int(self._ends[-1]), int(row_len))

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        whole = self._take(np.arange(len(self)))
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._take(np.asarray([key]))[0]
        if isinstance(key, slice):
            return self._take(np.arange(*key.indices(len(self))))
        if isinstance(key, tuple):
            raise TypeError("ShardedRows: index rows only (rows[i], rows[a:b], rows[[i, j]])")
        return self._take(np.asarray(key))

    def _take(self, idx: np.ndarray) -> np.ndarray:
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + len(self), idx)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        out = np.empty((len(idx), self.shape[1]), dtype=self.dtype)
        part = np.searchsorted(self._ends, idx, side="right")
        for k in np.unique(part):  # one fancy-index read per shard touched
            sel = np.flatnonzero(part == k)
            out[sel] = self._shard(int(k))[idx[sel] - self._starts[k]]
        return out

    def _shard(self, k: int) -> np.ndarray:
        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        rows = _map_shard(self._paths[k], (int(self._ends[k] - self._starts[k]), self.shape[1]),
                          self.dtype)
        self._open[k] = rows
        if len(self._open) > self.MAX_OPEN:
            self._open.popitem(last=False)
        return rows


def open_rows(token_dir: Path, split: str) -> ShardedRows | np.ndarray:
    """The packed rows of ``split``, memory-mapped: the token shards listed in
    ``manifest.json`` (stage tokenize), each checked against the index, or a single
    ``<split>.npy`` where the index lists no shards (the long-context study's layout)."""
    token_dir = Path(token_dir)
    entry = _split_entry(token_dir, split)
    if entry is not None and "shards" in entry:
        return open_split(token_dir, split, entry)
    path = token_dir / f"{split}.npy"
    if not path.exists():
        raise NLReproError(f"{path}: token rows not found (run the tokenize stage first)")
    try:
        rows = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise NLReproError(f"{path}: unreadable token rows ({type(exc).__name__})") from None
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise NLReproError(f"{path}: expected a non-empty 2-D array of rows, got {rows.shape}")
    return rows


def _split_entry(token_dir: Path, split: str) -> dict | None:
    path = token_dir / "manifest.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["splits"].get(split)
    except (ValueError, KeyError, AttributeError):
        raise NLReproError(f"{path}: not a token index (rerun the tokenize stage)") from None


def open_split(token_dir: Path, split: str, entry: dict) -> ShardedRows:
    """The rows of ``split`` from the shards its index ``entry`` lists. Every shard's size
    is checked against the index now (a stat, no read): a missing or truncated shard is one
    clear error naming it. Its header (shape, dtype) is checked when it is first mapped.
    Hashes are not recomputed here (``verify_split``; docs/DATA.md says why)."""
    token_dir = Path(token_dir)
    if not entry.get("shards"):
        raise NLReproError(f"{token_dir}/manifest.json: split '{split}' has no token rows")
    paths = []
    for shard in entry["shards"]:
        paths.append(_check_size(token_dir / shard["file"], shard["bytes"]))
    return ShardedRows(paths, [s["rows"] for s in entry["shards"]], entry["row_len"],
                       entry["dtype"])


def _check_size(path: Path, expected: int) -> Path:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise NLReproError(f"{path}: token shard missing (rerun the tokenize stage)") from None
    if size != expected:
        raise NLReproError(f"{path}: token shard is {size:,} bytes, the index says "
                           f"{expected:,} (truncated or replaced; rerun the tokenize stage)")
    return path


def _map_shard(path: Path, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    try:
        rows = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise NLReproError(f"{path}: unreadable token shard ({type(exc).__name__})") from None
    if rows.shape != shape or rows.dtype != dtype:
        raise NLReproError(f"{path}: token shard holds {rows.dtype} {rows.shape}, the index "
                           f"says {dtype} {shape}")
    return rows


def verify_split(token_dir: Path, entry: dict) -> str | None:
    """Hash every shard of a split against the index (a full read: for audits and tests,
    not every open); the first mismatch as one line, or None."""
    for shard in entry.get("shards", []):
        path = Path(token_dir) / shard["file"]
        if not path.exists() or sha256_file(path) != shard["sha256"]:
            return f"{path}: SHA-256 differs from the index"
    return None

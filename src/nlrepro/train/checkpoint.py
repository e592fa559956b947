"""Checkpoints written atomically and loaded strictly.

A checkpoint holds everything an exact resume needs: model and optimiser state, the step
(which fixes the data position and both schedules), the teach scale in force, every RNG
state, and the config it was trained with plus its hash. Loading refuses a checkpoint of
another config with one line naming the first differing key, and loads the model's
state dict with ``strict=True``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlrepro.errors import NLReproError
from nlrepro.io import atomic_path, sha256_file

FORMAT = 1


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python: the RNG states stored in checkpoints are then
    reproducible too (numpy's and Python's otherwise start from OS entropy)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, *, model_state: dict, optimizer_state: dict | None, step: int,
         teach_scale: float, config: dict, extra: dict | None = None) -> None:
    payload = {
        "format": FORMAT, "step": step, "teach_scale": teach_scale, "config": config,
        "config_hash": config_hash(config), "model": model_state,
        "optimizer": optimizer_state, "rng": rng_state(), "extra": extra or {},
    }
    write_torch(path, payload)


# --- resumable checkpoints: verified on load, the last two kept --------------------------

def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def previous_path(path: str | Path) -> Path:
    """``last.pt`` -> ``last.prev.pt``: the checkpoint before the latest one."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_resumable(path: str | Path, **kwargs) -> None:
    """``save`` with a size-and-hash record beside it (``last.pt.sha256``), after moving
    the previous intact checkpoint to ``last.prev.pt``: a crash at any point leaves at
    least one checkpoint that verifies."""
    path = Path(path)
    if path.exists() and verify(path) is None:
        prev = previous_path(path)
        os.replace(path, prev)
        os.replace(_record_path(path), _record_path(prev))
    save(path, **kwargs)
    record = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    with atomic_path(_record_path(path)) as tmp:
        tmp.write_text(json.dumps(record) + "\n")


def has_record(path: str | Path) -> bool:
    """Whether ``path`` was written by ``save_resumable`` (has a size-and-hash record)."""
    return _record_path(Path(path)).exists()


def verify(path: str | Path) -> str | None:
    """None when ``path`` matches its size-and-hash record, else why not."""
    path = Path(path)
    record_path = _record_path(path)
    if not path.exists():
        return "missing"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return "no size-and-hash record (written before the crash finished?)"
    size = path.stat().st_size
    if size != record.get("bytes"):
        return f"{size} bytes, {record.get('bytes')} written (truncated?)"
    if sha256_file(path) != record.get("sha256"):
        return "content does not match its SHA-256 (corrupt)"
    return None


def pick_resumable(path: str | Path, say=print) -> Path | None:
    """The checkpoint to resume from: ``path`` if it verifies, else the previous one if
    that does (said in one line), else None (said too: the run starts over)."""
    path = Path(path)
    if not path.exists() and not previous_path(path).exists():
        return None
    problem = verify(path)
    if problem is None:
        return path
    prev = previous_path(path)
    prev_problem = verify(prev)
    if prev_problem is None:
        say(f"{path}: {problem}; resuming from the previous checkpoint {prev}")
        return prev
    say(f"{path}: {problem}, and no intact previous checkpoint; starting the run over")
    return None


def remove_resumable(path: str | Path) -> None:
    """Delete the resumable checkpoints of a finished run (the log beside them stays)."""
    path = Path(path)
    for p in (path, previous_path(path)):
        p.unlink(missing_ok=True)
        _record_path(p).unlink(missing_ok=True)


def write_torch(path: str | Path, obj) -> None:
    """``torch.save`` atomically and byte-reproducibly: serialising into memory first
    names the archive "archive" rather than after the random temporary file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else key
            if key not in a or key not in b:
                return sub
            found = _first_difference(a[key], b[key], sub)
            if found:
                return found
        return None
    return None if a == b else (path or "config")


def load(path: str | Path, config: dict | None = None) -> dict:
    """Read a checkpoint; when ``config`` is given it must be the checkpoint's config."""
    path = Path(path)
    if not path.exists():
        raise NLReproError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise NLReproError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NLReproError(f"{path}: not an nlrepro checkpoint (format {FORMAT})")
    if config is not None and payload["config_hash"] != config_hash(config):
        key = _first_difference(payload["config"], config)
        raise NLReproError(f"{path}: checkpoint was trained with another config "
                           f"(first difference at {key}); refusing to load it")
    return payload


def load_model_state(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``load_state_dict(strict=True)`` with the mismatch reported in one line."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise NLReproError(f"{path}: weights do not match the model "
                           f"({first[1].strip() if len(first) > 1 else first[0]})") from None

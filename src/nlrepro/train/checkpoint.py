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
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlrepro.errors import NLReproError
from nlrepro.io import atomic_path

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

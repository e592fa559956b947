"""The checkpoint contract, in one module: what identifies a run, what a resume restores,
and how a model comes back from its file.

* ``RunConfig``: everything that determines the trained weights (variant, seed, model,
  in-context multipliers and clips, teach schedule, optimisation, tokenised data), typed,
  with one hash (``configlib.digest`` of ``identity()``) that names the run directory and
  is checked when a checkpoint is resumed.
* ``TrainingState``: model, optimiser and ``Progress`` (step, teach scale in force, guard
  counters); it saves and restores itself with every RNG state. The step fixes the data
  position and both schedules, so nothing else is needed for an exact resume.
* ``model_from_checkpoint``: the model of a checkpoint, rebuilt from the ``RunConfig``
  stored in it and loaded strictly; used by the evaluate stage and the lm-eval adapter.

Files are written atomically and byte-reproducibly; resumable ones carry a size-and-hash
record and keep their predecessor. Resumable checkpoints of FSDP runs are directories of
per-rank shards (``sharded.py``, torch.distributed.checkpoint) under the same record and
rotation. The callers (stages) own the file layout and pass
paths in. Loading refuses a checkpoint of another config with one line naming the first
differing key.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np
import torch
from torch import nn

from nlrepro.configlib import ConfigError, digest, parse, rng, to_dict
from nlrepro.errors import NLReproError
from nlrepro.io import atomic_path, sha256_file
from nlrepro.model.config import InContextConfig, ModelConfig, Variant
from nlrepro.model.lm import NestedLM, build_model
from nlrepro.train import sharded
from nlrepro.train.config import TeachConfig, TrainConfig
from nlrepro.train.distributed import full_state, load_full_state

FORMAT = 2


# --- what a run is -------------------------------------------------------------------------

@dataclass(frozen=True)
class DataIdentity:
    """The tokenised data a run trained on (from data/tokens/manifest.json)."""

    tokenizer_sha256: str
    vocab_size: int = field(metadata=rng(1, None))
    row_len: int = field(metadata=rng(2, None))
    train_rows: int = field(metadata=rng(0, None))

    @classmethod
    def from_manifest(cls, manifest: dict) -> "DataIdentity":
        return cls(manifest["tokenizer_sha256"], manifest["vocab_size"], manifest["row_len"],
                   manifest["splits"]["train"]["rows"])


# TrainConfig fields that never change the weights (where and how often to log, validate,
# checkpoint; devices and threads): left out of the run's identity, so changing them
# resumes the same run instead of starting another.
RUNTIME_KEYS = ("variants", "seeds", "threads", "anomaly", "eval_every", "eval_batches",
                "log_every", "ckpt_every", "max_skips", "device", "backend")


@dataclass(frozen=True)
class RunConfig:
    """One (variant, seed) run: everything that determines its trained weights."""

    variant: Variant
    seed: int = field(metadata=rng(0, None))
    model: ModelConfig
    in_context: InContextConfig
    # The teach scale's peak, its schedule, and the outer gradient clip (clip.grad_norm).
    teach_scale: float = field(metadata=rng(0.0, None))
    teach: TeachConfig
    grad_clip: Optional[float] = field(metadata=rng(0.0, None))
    train: TrainConfig
    data: DataIdentity

    def identity(self) -> dict:
        """``to_dict`` without the runtime-only train keys."""
        out = to_dict(self)
        for key in RUNTIME_KEYS:
            out["train"].pop(key)
        return out

    def hash(self) -> str:
        return digest(self.identity())

    @classmethod
    def from_dict(cls, raw: dict, where: str) -> "RunConfig":
        try:
            return parse(cls, raw, "checkpoint.config")
        except ConfigError as exc:
            raise NLReproError(f"{where}: checkpoint config is not usable ({exc})") from None


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


# --- what a resume restores ----------------------------------------------------------------

@dataclass
class Progress:
    """A run's counters besides its tensors, saved and restored whole."""

    step: int = 0                       # steps done: fixes the data position and schedules
    teach_scale: float = 0.0            # the teach scale in force at the last step
    skipped_steps: int = 0              # non-finite steps skipped
    max_update_norm: float = 0.0        # largest update_norm/* seen
    nonfinite_seen: bool = False
    # Per guard, [summed per-step share of tokens/updates it clipped, steps counted].
    guard_sums: dict[str, list[float]] = field(default_factory=dict)
    tokens_seen: int = 0


@dataclass
class TrainingState:
    """Model, optimiser and progress of a run: ``save`` writes all of it with every RNG
    state; ``restore`` puts it back so that training continues bit for bit."""

    model: nn.Module
    optimizer: Optional[torch.optim.Optimizer]
    progress: Progress = field(default_factory=Progress)
    fsdp: bool = False

    def save(self, path: str | Path, run: RunConfig, lineage: dict, write: bool = True,
             resumable: bool = True) -> None:
        """Every rank calls this (collective under FSDP); only ``write`` ranks write.
        Resumable: with the optimiser, a hash record and the predecessor kept (under FSDP
        a directory of per-rank shards, ``sharded.py``); else the final weights only,
        gathered into one file."""
        meta = {"format": FORMAT, "config": to_dict(run), "config_hash": run.hash(),
                "progress": dataclasses.asdict(self.progress), "rng": rng_state(),
                "lineage": lineage}
        if resumable and self.fsdp:
            def finish(tmp: Path) -> None:
                write_torch(tmp / sharded.EXTRA, {**meta, "sharded": True})
                install(tmp, Path(path))
            sharded.save(path, self.model, self.optimizer, write, finish)
            return
        model_state, optim_state = full_state(self.model, self.optimizer if resumable else None,
                                              self.fsdp)
        if not write:
            return
        payload = {**meta, "model": model_state, "optimizer": optim_state}
        (save_resumable if resumable else write_torch)(path, payload)

    def restore(self, path: str | Path, run: RunConfig) -> None:
        """Load ``path``, which must be a resumable checkpoint of ``run`` (a file, or
        under FSDP a directory of shards)."""
        if sharded.is_sharded(path):
            _check_run(load(Path(path) / sharded.EXTRA), path, run)
            if not self.fsdp:
                raise NLReproError(f"{path}: a sharded (FSDP) checkpoint; resume it with train.fsdp")
            try:
                payload = sharded.load(path, self.model, self.optimizer)
            except (RuntimeError, KeyError, ValueError) as exc:
                raise NLReproError(f"{path}: shards do not match the model "
                                   f"({str(exc).strip().splitlines()[0]})") from None
        else:
            payload = load(path, run)
            if payload["optimizer"] is None:
                raise NLReproError(f"{path}: holds final weights only, not a resumable checkpoint")
            try:
                load_full_state(self.model, self.optimizer, payload["model"], payload["optimizer"],
                                self.fsdp)
            except (RuntimeError, KeyError, ValueError) as exc:
                raise NLReproError(f"{path}: weights do not match the model "
                                   f"({str(exc).strip().splitlines()[0]})") from None
        set_rng_state(payload["rng"])
        self.progress = Progress(**payload["progress"])


# --- a model back from its file ------------------------------------------------------------

class Loaded(NamedTuple):
    model: NestedLM
    run: RunConfig
    progress: Progress
    sha256: str                     # of the checkpoint file
    config_hash: str


def model_from_checkpoint(path: str | Path, variant: Optional[str] = None,
                          seed: Optional[int] = None) -> Loaded:
    """The model of a training checkpoint (final or resumable), rebuilt from the
    ``RunConfig`` stored in it and loaded with ``strict=True``, in eval mode on the CPU.
    ``variant`` and ``seed``, when given, must be the checkpoint's."""
    path = Path(path)
    payload = load(path)
    stored = payload["config"] if isinstance(payload.get("config"), dict) else {}
    if variant is not None and stored.get("variant", variant) != variant:
        raise NLReproError(f"{path}: holds a {stored['variant']} model, not {variant}")
    if seed is not None and stored.get("seed", seed) != seed:
        raise NLReproError(f"{path}: was trained with seed {stored['seed']}, not {seed}")
    run = RunConfig.from_dict(payload["config"], str(path))
    model = build_model(run.model, run.data.vocab_size, run.in_context)
    load_model_state(model, payload["model"], path)
    model.eval()
    return Loaded(model, run, Progress(**payload["progress"]), sha256_file(path),
                  payload["config_hash"])


# --- resumable checkpoints: verified on load, the last two kept --------------------------

def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def previous_path(path: str | Path) -> Path:
    """``last.pt`` -> ``last.prev.pt`` (``last.dcp`` -> ``last.prev.dcp``): the checkpoint
    before the latest one."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _fingerprint(path: Path) -> dict:
    """Size and SHA-256 of a file, or of every file in a directory (sharded checkpoints)."""
    if path.is_dir():
        return {"files": {p.relative_to(path).as_posix(): _fingerprint(p)
                          for p in sorted(path.rglob("*")) if p.is_file()}}
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _rotate(path: Path) -> None:
    """Move an intact ``path`` (and its record) to the previous-checkpoint name."""
    if path.exists() and verify(path) is None:
        prev = previous_path(path)
        _remove(prev)
        os.replace(path, prev)
        os.replace(_record_path(path), _record_path(prev))


def _write_record(path: Path) -> None:
    with atomic_path(_record_path(path)) as tmp:
        tmp.write_text(json.dumps(_fingerprint(path)) + "\n")


def save_resumable(path: str | Path, payload: dict) -> None:
    """``write_torch`` with a size-and-hash record beside it (``last.pt.sha256``), after moving
    the previous intact checkpoint to ``last.prev.pt``: a crash at any point leaves at
    least one checkpoint that verifies."""
    path = Path(path)
    _rotate(path)
    write_torch(path, payload)
    _write_record(path)


def install(tmp: Path, path: Path) -> None:
    """Put a fully written checkpoint directory ``tmp`` at ``path``: the previous intact
    one moves to ``last.prev.dcp``, then ``tmp`` is renamed and its record written."""
    _rotate(path)
    if path.exists():
        _remove(path)          # a latest that did not verify: the new one replaces it
    os.replace(tmp, path)
    _write_record(path)


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
    if "files" in record:
        return _verify_dir(path, record["files"])
    size = path.stat().st_size
    if size != record.get("bytes"):
        return f"{size} bytes, {record.get('bytes')} written (truncated?)"
    if sha256_file(path) != record.get("sha256"):
        return "content does not match its SHA-256 (corrupt)"
    return None


def _verify_dir(path: Path, files: dict) -> str | None:
    if not path.is_dir():
        return "not a directory of shards"
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    for name in sorted(set(files) | present):
        if name not in present:
            return f"shard {name} missing"
        if name not in files:
            return f"unrecorded file {name}"
        size, want = (path / name).stat().st_size, files[name]
        if size != want["bytes"]:
            return f"shard {name}: {size} bytes, {want['bytes']} written (truncated?)"
        if sha256_file(path / name) != want["sha256"]:
            return f"shard {name}: content does not match its SHA-256 (corrupt)"
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
        _remove(p)
        _record_path(p).unlink(missing_ok=True)
    shutil.rmtree(sharded.temp_dir(path), ignore_errors=True)


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


def load(path: str | Path, run: RunConfig | None = None) -> dict:
    """Read a checkpoint; when ``run`` is given it must be the checkpoint's run."""
    path = Path(path)
    if not path.exists():
        raise NLReproError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise NLReproError(f"{path}: a sharded (FSDP) training checkpoint; evaluation reads the "
                           f"final weights the run writes to models/")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise NLReproError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NLReproError(f"{path}: not an nlrepro checkpoint (format {FORMAT})")
    if run is not None:
        _check_run(payload, path, run)
    return payload


def _check_run(payload: dict, path: str | Path, run: RunConfig) -> None:
    """Refuse a checkpoint of another config, naming the first differing key."""
    if payload["config_hash"] != run.hash():
        stored = json.loads(json.dumps(payload["config"]))
        for key in RUNTIME_KEYS:
            stored.get("train", {}).pop(key, None)
        key = _first_difference(stored, run.identity())
        raise NLReproError(f"{path}: checkpoint was trained with another config "
                           f"(first difference at {key}); refusing to load it")


def load_model_state(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``load_state_dict(strict=True)`` with the mismatch reported in one line."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise NLReproError(f"{path}: weights do not match the model "
                           f"({first[1].strip() if len(first) > 1 else first[0]})") from None

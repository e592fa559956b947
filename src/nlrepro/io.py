"""Atomic writes: every output is written under a temporary name and renamed, so a crash
never leaves a half-written file that DVC would cache as good.

Temporary names are ``.<name>.<pid>.<random>.tmp`` beside the target. A writer killed with
``kill -9`` cannot remove its own, so the next writer of the same target removes every
such sibling whose process is gone (and .gitignore hides them meanwhile): a rerun leaves
the tree clean."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from nlrepro.errors import NLReproError


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _publish_mode(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give outputs the mode an ordinary file
    would get under the user's umask, so collaborators on a shared filesystem can read
    them."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` left by writers that died (their PID, in the
    name, is gone); return what was removed."""
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")
        if not parts[0].isdigit() or _alive(int(parts[0])):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            _publish_mode(tmp, directory=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB pieces (memory bounded whatever its size)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_table(path: str | Path, table: pa.Table, row_group_size: int | None = None) -> None:
    """Parquet with fixed settings so equal tables give byte-identical files. A reader
    decodes a row group at a time: ``row_group_size`` rows bound its memory."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=False,
                       write_statistics=False, store_schema=True, row_group_size=row_group_size)


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read a parquet file; a missing, corrupt or wrongly shaped file is one clear error."""
    path = Path(path)
    if not path.exists():
        raise NLReproError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise NLReproError(f"{path}: corrupt or unreadable parquet ({type(exc).__name__})") from None
    missing = [c for c in columns or [] if c not in table.column_names]
    if missing:
        raise NLReproError(f"{path}: missing column '{missing[0]}'")
    return table.select(columns) if columns else table

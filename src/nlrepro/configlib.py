"""Typed, validated configuration from plain dicts (params.yaml).

Every config section is a frozen dataclass. ``parse(cls, raw, path)`` builds it and
rejects, with one line naming the dotted key: unknown keys, wrong types and values
outside the inclusive ``metadata={"range": (lo, hi)}`` of a field (``None`` = open).

Supported field types: int, float (ints accepted), bool, str, Optional[X],
Literal[...], list[X], tuple[X, ...], dict[str, X] and nested dataclasses. A dict field
whose value type is a *tagged union* (``Union[A, B]`` of dataclasses with a
``type: Literal[...]`` field) dispatches on the ``type`` key.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from nlrepro.errors import NLReproError


class ConfigError(NLReproError):
    """A params value the loader rejects; the message names the dotted key."""


class NonFiniteError(ConfigError):
    """A NaN or infinite float: no config float may be one."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _check_range(value: Any, meta: dict, path: str) -> None:
    lo, hi = meta.get("range", (None, None))
    if value is None or isinstance(value, (bool, tuple, dict, str)):
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(f"{path}: must be in [{lo_s}, {hi_s}], got {value!r}")


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if isinstance(value, bool) and {"off", "on"} & set(args):
            # YAML 1.1 reads a bare off/on as a boolean (and `dvc exp run -S` drops quotes).
            value = "on" if value else "off"
        if value not in args:
            raise ConfigError(f"{path}: must be one of {_type_name(tp)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        tagged = [a for a in members if dataclasses.is_dataclass(a)]
        if tagged and len(tagged) == len(members):
            return _parse_tagged(tagged, value, path)
        for member in members:
            try:
                return _convert(member, value, path)
            except NonFiniteError:
                raise
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        _, val_tp = args
        return {str(k): _convert(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (write floats like 3.0e-4)" if isinstance(value, str) else ""
            raise ConfigError(f"{path}: expected a number, got {value!r}{hint}")
        if not math.isfinite(value):
            # Every float is finite, wherever it sits (fields, list items, mapping values):
            # NaN fails every range comparison, so it would pass any range silently.
            raise NonFiniteError(f"{path}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _parse_tagged(classes: list, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {value!r}")
    by_tag = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for tag in typing.get_args(hints["type"]):
            by_tag[tag] = cls
    tag = value.get("type")
    if tag not in by_tag:
        raise ConfigError(
            f"{path}.type: unknown type {tag!r} (expected one of {', '.join(sorted(by_tag))})"
        )
    return parse(by_tag[tag], value, path)


def parse(cls: type, raw: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from mapping ``raw``; missing keys take their defaults."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'params'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        close = difflib.get_close_matches(str(unknown[0]), list(fields), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"{key}: unknown key ({hint}known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in raw:
            value = _convert(hints[name], raw[name], key)
            _check_range(value, dict(f.metadata), key)
            if isinstance(value, tuple):
                for i, item in enumerate(value):
                    _check_range(item, dict(f.metadata), f"{key}[{i}]")
            kwargs[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (tuples become lists), e.g. for hashing or logging."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def rng(lo: float | None = None, hi: float | None = None) -> dict:
    """Field metadata for an inclusive range check."""
    return {"range": (lo, hi)}


def digest(obj: Any) -> str:
    """The one config hash: SHA-256 of the sorted-key JSON of ``to_dict(obj)``, 16 hex
    digits. It names run directories and records lineage (params, eval section, run)."""
    blob = json.dumps(to_dict(obj), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_yaml(path: str | Path) -> Any:
    """A params file's raw mapping; a missing file or a YAML error is one line."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NLReproError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise NLReproError(f"{path}: not valid YAML{where}") from None


def load_section(cls: type, key: str, path: str | Path = "params.yaml") -> Any:
    """One top-level section of a params file, typed as ``cls`` (for tools that need only
    their own section; the pipeline's stages validate the whole file)."""
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse(cls, raw.get(key), key)

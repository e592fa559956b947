"""Ingest: every source type yields ``(doc_id, text)`` with a stable ``doc_id``.

``hf`` and ``local`` go through Hugging Face ``datasets`` in streaming mode (no Arrow
cache written, a document limit honoured without downloading a whole dataset). A local
directory laid out like a hub dataset repository (``data/<split>-*.parquet``) goes
through exactly the same ``load_dataset`` call as a hub id, which is how it is tested.
"""
from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from nlrepro.data.config import HFSource, LocalSource, ShakespeareSource, Source, SyntheticSource
from nlrepro.data import shakespeare, synthetic
from nlrepro.errors import NLReproError

_FORMAT_BUILDER = {"txt": "text", "jsonl": "json", "parquet": "parquet"}


def _quiet_datasets():
    import datasets

    # datasets logs multi-line errors of its own before raising; we report one line.
    datasets.logging.set_verbosity(logging.CRITICAL)
    datasets.disable_progress_bars()
    return datasets


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _texts(rows: Iterable[dict], text_field: str, where: str) -> Iterator[str]:
    for i, row in enumerate(rows):
        if text_field not in row:
            raise NLReproError(f"{where}: missing text field '{text_field}' (fields: "
                               f"{', '.join(sorted(row))})")
        text = row[text_field]
        if not isinstance(text, str):
            raise NLReproError(f"{where}: field '{text_field}' of row {i} is not text")
        yield text


def iter_hf(src: HFSource, name: str) -> Iterator[tuple[str, str]]:
    """Stream ``src.limit`` documents of a hub dataset (or a local dir in hub layout)."""
    datasets = _quiet_datasets()
    where = f"source '{name}' (hf {src.path})"
    try:
        stream = datasets.load_dataset(src.path, src.name, split=src.split, streaming=True,
                                       revision=src.revision)
        texts = _texts(stream.take(src.limit), src.text_field, where)
        tag = f"hf/{src.path}/{src.name or 'default'}/{src.split}"
        for i, text in enumerate(texts):
            yield f"{tag}/{i:09d}", text
    except NLReproError:
        raise
    except Exception as exc:  # hub, network and format errors all become one line
        raise NLReproError(f"{where}: cannot load: {_first_line(exc)}") from None


def resolve_paths(patterns: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern, recursive=True))
        if not matched:
            raise NLReproError(f"local source: no file matches '{pattern}'")
        files.extend(Path(m) for m in matched)
    return files


def iter_local(src: LocalSource, name: str) -> Iterator[tuple[str, str]]:
    """Read txt (one document per file), JSONL or parquet files, one file at a time so
    an error names the file."""
    datasets = _quiet_datasets()
    builder = _FORMAT_BUILDER[src.format]
    extra = {"sample_by": "document"} if src.format == "txt" else {}
    count = 0
    for path in resolve_paths(src.paths):
        where = f"source '{name}': {path}"
        try:
            stream = datasets.load_dataset(builder, data_files=[str(path)], split="train",
                                           streaming=True, **extra)
            field = "text" if src.format == "txt" else src.text_field
            for i, text in enumerate(_texts(stream, field, where)):
                if src.limit is not None and count >= src.limit:
                    return
                count += 1
                yield f"local/{path.as_posix()}/{i:09d}", text
        except NLReproError:
            raise
        except UnicodeDecodeError:
            raise NLReproError(f"{where}: not valid UTF-8 text") from None
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise NLReproError(f"{where}: unreadable {src.format} file ({_first_line(exc)})") from None


def iter_source(name: str, src: Source, seed: int) -> Iterator[tuple[str, str]]:
    """Dispatch on the source type."""
    if isinstance(src, ShakespeareSource):
        return shakespeare.iter_documents(src.unit, src.limit)
    if isinstance(src, SyntheticSource):
        return synthetic.iter_documents(seed, src.num_docs, src.kinds, src.distances,
                                        src.num_pairs)
    if isinstance(src, HFSource):
        return iter_hf(src, name)
    if isinstance(src, LocalSource):
        return iter_local(src, name)
    raise NLReproError(f"source '{name}': unknown source type {type(src).__name__}")


def ingest_table(name: str, src: Source, seed: int) -> pa.Table:
    """All documents of one source as a table ``(doc_id, source, text)``."""
    ids, texts = [], []
    for doc_id, text in iter_source(name, src, seed):
        ids.append(doc_id)
        texts.append(text)
    if not ids:
        raise NLReproError(f"source '{name}': produced no documents")
    if len(set(ids)) != len(ids):
        raise NLReproError(f"source '{name}': duplicate doc_id values")
    return pa.table({"doc_id": ids, "source": [name] * len(ids), "text": texts})

"""Ingest: every source type yields ``(doc_id, text)`` with a stable ``doc_id``.

``hf`` and ``local`` go through Hugging Face ``datasets`` in streaming mode (no Arrow
cache written, a document limit honoured without downloading a whole dataset). A local
directory laid out like a hub dataset repository (``data/<split>-*.parquet``) goes
through exactly the same ``load_dataset`` call as a hub id, which is how it is tested.
An ``hf`` read stops at a document limit or a character budget and can be resumed from
a saved position (``HFReader.state_dict``) with the same doc_ids as an unbroken read.
"""
from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

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


def _text(row: dict, text_field: str, where: str, i: int) -> str:
    if text_field not in row:
        raise NLReproError(f"{where}: missing text field '{text_field}' (fields: "
                           f"{', '.join(sorted(row))})")
    text = row[text_field]
    if not isinstance(text, str):
        raise NLReproError(f"{where}: field '{text_field}' of row {i} is not text")
    return text


def _texts(rows: Iterable[dict], text_field: str, where: str) -> Iterator[str]:
    for i, row in enumerate(rows):
        yield _text(row, text_field, where, i)


_END = object()


class HFReader:
    """Stream one split of a hub dataset (or a local directory in the hub layout) in
    order, as ``(doc_id, text)``, until ``src.limit`` documents or ``src.max_chars``
    characters, whichever comes first (the document that reaches the budget is kept
    whole: documents are never cut).

    ``doc_id`` is ``hf/<path>/<name>/<split>/<position>``, the position counted from the
    start of the split, so a resumed read yields the same ids as an unbroken one.

    ``state_dict()`` after any document is a JSON-serialisable position: the source it
    belongs to, the documents and characters read so far and the ``datasets`` stream
    state (shard and row, ``IterableDataset.state_dict``). ``HFReader(src, name, state)``
    continues right after that document; the limit and the budget count the whole read,
    not the resumed part. A state without a ``datasets`` entry (``{"docs": n, "chars":
    c}``, e.g. counted from a partial output) resumes with ``skip(n)`` instead, which
    reads and drops the first n rows. Iterating the same reader again goes on from
    where the last iteration stopped.
    """

    def __init__(self, src: HFSource, name: str, state: Optional[dict[str, Any]] = None):
        self.src = src
        self.where = f"source '{name}' (hf {src.path})"
        self.tag = f"hf/{src.path}/{src.name or 'default'}/{src.split}"
        self._docs, self._chars, self._stream = 0, 0, None
        self._resume = None
        if state is not None:
            self._check_state(state)
            self._docs, self._chars = int(state["docs"]), int(state["chars"])
            self._resume = state.get("datasets")

    def _source_key(self) -> dict[str, Any]:
        s = self.src
        return {"path": s.path, "name": s.name, "split": s.split, "revision": s.revision,
                "text_field": s.text_field}

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, dict) or not {"docs", "chars"} <= state.keys():
            raise NLReproError(f"{self.where}: resume state needs 'docs' and 'chars'")
        if state.get("source", self._source_key()) != self._source_key():
            # ids and budget would silently mix two different reads
            raise NLReproError(f"{self.where}: resume state belongs to another source "
                               f"({state['source'].get('path')})")

    def _done(self) -> bool:
        s = self.src
        return ((s.limit is not None and self._docs >= s.limit)
                or (s.max_chars is not None and self._chars >= s.max_chars))

    def state_dict(self) -> dict[str, Any]:
        """The position after the last document yielded (JSON-serialisable)."""
        if self._stream is not None:
            ds_state = self._stream.state_dict()
        else:
            ds_state = self._resume  # nothing read yet: the position it was given
        return {"source": self._source_key(), "docs": self._docs, "chars": self._chars,
                "datasets": ds_state}

    def _open(self):
        datasets = _quiet_datasets()
        s = self.src
        stream = datasets.load_dataset(s.path, s.name, split=s.split, streaming=True,
                                       revision=s.revision)
        if self._resume is not None:
            stream.load_state_dict(self._resume)
        elif self._docs:
            stream = stream.skip(self._docs)
        return stream

    def __iter__(self) -> Iterator[tuple[str, str]]:
        try:
            if self._stream is not None:  # iterated before: go on from where that stopped
                self._resume = self._stream.state_dict()
            if self._done():
                return
            self._stream = self._open()
            rows = iter(self._stream)
            # check the limit before pulling a row, so the stream state never runs ahead
            # of the last document handed out
            while not self._done():
                row = next(rows, _END)
                if row is _END:
                    return
                text = _text(row, self.src.text_field, self.where, self._docs)
                doc_id = f"{self.tag}/{self._docs:09d}"
                self._docs += 1
                self._chars += len(text)
                yield doc_id, text
        except NLReproError:
            raise
        except Exception as exc:  # hub, network, format and state errors all become one line
            raise NLReproError(f"{self.where}: cannot load: {_first_line(exc)}") from None


def iter_hf(src: HFSource, name: str,
            state: Optional[dict[str, Any]] = None) -> Iterator[tuple[str, str]]:
    """The documents of ``HFReader(src, name, state)``: up to ``src.limit`` documents or
    ``src.max_chars`` characters of a hub dataset (or a local dir in hub layout)."""
    return iter(HFReader(src, name, state))


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

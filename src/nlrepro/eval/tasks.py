"""The paper's zero-shot tasks as lm-evaluation-harness 0.4 builds them: where each task's
data lives, which fields a row needs, and how a row becomes log-likelihood requests.

A multiple-choice row becomes one ``(context, continuation)`` request per choice, the
continuation being ``" " + choice`` (lm-eval's ``target_delimiter``). WinoGrande is the
exception ("partial scoring"): the choices go into the contexts and all share one
continuation. LAMBADA is one request whose target is the last word; WikiText is one
document scored by rolling log-likelihood. See ``docs/EVAL_TASKS.md``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Union

from nlrepro.errors import NLReproError
from nlrepro.eval.detokenize import (
    count_bytes,
    count_words,
    hellaswag_preprocess,
    wikitext_detokenize,
)

Request = tuple[str, str]  # (context, continuation)
TaskKind = Literal["multiple_choice", "loglikelihood", "loglikelihood_rolling"]


@dataclass(frozen=True)
class ChoiceExample:
    """Choice ``i`` is scored by the summed log-likelihood of ``requests[i]``; ``acc_norm``
    divides it by ``len(choices[i])`` in characters (lm-eval's ``doc_to_choice``)."""

    doc_id: int
    requests: tuple[Request, ...]
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class TargetExample:
    """One request; ``acc`` asks whether the whole target is the greedy continuation."""

    doc_id: int
    context: str
    target: str

    @property
    def requests(self) -> tuple[Request, ...]:
        return ((self.context, self.target),)


@dataclass(frozen=True)
class RollingExample:
    """A whole document: ``text`` (detokenised) is scored, ``words`` and ``bytes`` are
    counted on the raw page, as lm-eval's wikitext does."""

    doc_id: int
    text: str
    words: int
    bytes: int


Example = Union[ChoiceExample, TargetExample, RollingExample]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    hf_path: str
    hf_name: str | None
    split: str
    fields: tuple[str, ...]
    kind: TaskKind
    metrics: tuple[str, ...]  # what lm-eval reports for the task
    build: Callable[[int, dict[str, Any]], Example]


@dataclass(frozen=True)
class TaskData:
    """A loaded task: its rows as read, the examples built from them, where they came from,
    and a hash of the rows (for result lineage)."""

    spec: TaskSpec
    source: str
    docs: list[dict[str, Any]]
    examples: list[Example]
    sha256: str


class _BadRow(Exception):
    """A row-level problem; ``build_examples`` adds the task, source and row number."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field '{field}' {problem}")


def _text(doc: dict[str, Any], field: str) -> str:
    value = doc[field]
    if not isinstance(value, str):
        raise _BadRow(field, f"is {value!r}, expected a string")
    return value


def _texts(doc: dict[str, Any], field: str, value: Any = None) -> list[str]:
    value = doc[field] if value is None else value
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _BadRow(field, f"is {value!r}, expected a list of strings")
    return list(value)


def _label(doc: dict[str, Any], field: str, n_choices: int, first: int = 0) -> int:
    """A 0-based gold index from an integer or digit-string label numbered from ``first``."""
    value = doc[field]
    try:
        index = int(value) - first
    except (TypeError, ValueError):
        raise _BadRow(field, f"is {value!r}, expected an integer label") from None
    if not 0 <= index < n_choices:
        raise _BadRow(field, f"is {value!r}, out of range for {n_choices} choices")
    return index


def _choices_after(doc_id: int, prompt: str, choices: list[str], gold: int) -> ChoiceExample:
    requests = tuple((prompt, " " + choice) for choice in choices)
    return ChoiceExample(doc_id, requests, tuple(choices), gold)


def _piqa(doc_id: int, doc: dict[str, Any]) -> Example:
    prompt = f"Question: {_text(doc, 'goal')}\nAnswer:"
    choices = [_text(doc, "sol1"), _text(doc, "sol2")]
    return _choices_after(doc_id, prompt, choices, _label(doc, "label", 2))


def _hellaswag(doc_id: int, doc: dict[str, Any]) -> Example:
    ctx = _text(doc, "ctx_a") + " " + _text(doc, "ctx_b").capitalize()
    prompt = hellaswag_preprocess(_text(doc, "activity_label") + ": " + ctx)
    choices = [hellaswag_preprocess(e) for e in _texts(doc, "endings")]
    return _choices_after(doc_id, prompt, choices, _label(doc, "label", len(choices)))


def _winogrande(doc_id: int, doc: dict[str, Any]) -> Example:
    """Partial scoring: context ``sentence[:blank] + option`` (no space added: the blank's
    own left space is already in the sentence), one continuation for both options,
    ``" " + sentence[blank + 1:].strip()``."""
    sentence = _text(doc, "sentence")
    blank = sentence.find("_")
    if blank < 0:
        raise _BadRow("sentence", "has no '_' blank")
    contexts = [sentence[:blank] + _text(doc, "option1"), sentence[:blank] + _text(doc, "option2")]
    continuation = " " + sentence[blank + 1 :].strip()
    requests = tuple((context, continuation) for context in contexts)
    # lm-eval's doc_to_choice here is the partial contexts; only acc is reported.
    return ChoiceExample(doc_id, requests, tuple(contexts), _label(doc, "answer", 2, first=1))


def _arc(doc_id: int, doc: dict[str, Any]) -> Example:
    choices_field = doc["choices"]
    if not isinstance(choices_field, dict) or not {"text", "label"} <= choices_field.keys():
        raise _BadRow("choices", f"is {choices_field!r}, expected {{text: [...], label: [...]}}")
    texts = _texts(doc, "choices.text", choices_field["text"])
    labels = [str(label) for label in choices_field["label"]]
    if len(labels) != len(texts):
        raise _BadRow("choices.label", f"has {len(labels)} labels for {len(texts)} texts")
    key = str(doc["answerKey"])
    if key not in labels:
        raise _BadRow("answerKey", f"is {key!r}, not one of choices.label {labels}")
    prompt = f"Question: {_text(doc, 'question')}\nAnswer:"
    return _choices_after(doc_id, prompt, texts, labels.index(key))


def _siqa(doc_id: int, doc: dict[str, Any]) -> Example:
    prompt = f"Q: {_text(doc, 'context')} {_text(doc, 'question')}\nA:"
    choices = [_text(doc, "answerA"), _text(doc, "answerB"), _text(doc, "answerC")]
    return _choices_after(doc_id, prompt, choices, _label(doc, "label", 3, first=1))


def _boolq(doc_id: int, doc: dict[str, Any]) -> Example:
    prompt = f"{_text(doc, 'passage')}\nQuestion: {_text(doc, 'question')}?\nAnswer:"
    return _choices_after(doc_id, prompt, ["no", "yes"], _label(doc, "label", 2))


def _lambada(doc_id: int, doc: dict[str, Any]) -> Example:
    """Split on single spaces, as lm-eval's template does (newlines stay inside words)."""
    words = _text(doc, "text").split(" ")
    return TargetExample(doc_id, " ".join(words[:-1]), " " + words[-1])


def _wikitext(doc_id: int, doc: dict[str, Any]) -> Example:
    page = _text(doc, "page")
    return RollingExample(doc_id, wikitext_detokenize(page), count_words(page), count_bytes(page))


_MC_BOTH = ("acc", "acc_norm")
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("piqa", "baber/piqa", None, "validation",
                 ("goal", "sol1", "sol2", "label"), "multiple_choice", _MC_BOTH, _piqa),
        TaskSpec("hellaswag", "Rowan/hellaswag", None, "validation",
                 ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
                 "multiple_choice", _MC_BOTH, _hellaswag),
        TaskSpec("winogrande", "allenai/winogrande", "winogrande_xl", "validation",
                 ("sentence", "option1", "option2", "answer"),
                 "multiple_choice", ("acc",), _winogrande),
        TaskSpec("arc_easy", "allenai/ai2_arc", "ARC-Easy", "test",
                 ("question", "choices", "answerKey"), "multiple_choice", _MC_BOTH, _arc),
        TaskSpec("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "test",
                 ("question", "choices", "answerKey"), "multiple_choice", _MC_BOTH, _arc),
        TaskSpec("siqa", "allenai/social_i_qa", None, "validation",
                 ("context", "question", "answerA", "answerB", "answerC", "label"),
                 "multiple_choice", ("acc",), _siqa),
        TaskSpec("boolq", "aps/super_glue", "boolq", "validation",
                 ("passage", "question", "label"), "multiple_choice", ("acc",), _boolq),
        TaskSpec("lambada_openai", "EleutherAI/lambada_openai", "default", "test",
                 ("text",), "loglikelihood", ("perplexity", "acc"), _lambada),
        TaskSpec("wikitext", "EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test",
                 ("page",), "loglikelihood_rolling",
                 ("word_perplexity", "byte_perplexity", "bits_per_byte"), _wikitext),
    ]
}

_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def get_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise NLReproError(f"unknown task '{task}' (known: {', '.join(TASKS)})")
    return TASKS[task]


def _one_line(exc: BaseException) -> str:
    """The innermost cause, on one line: datasets wraps the useful message (which line of
    the file failed to parse) in a generic DatasetGenerationError."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def load_docs(
    task: str, path: str | Path | None = None, *, limit: int | None = None
) -> tuple[list[dict[str, Any]], str]:
    """The task's rows and a name for their source.

    ``path=None`` reads the HF hub dataset of ``TASKS[task]`` (``datasets.load_dataset(
    hf_path, hf_name, split=split)``); otherwise a local ``.jsonl``/``.json``/``.parquet``
    file with the same field names. ``limit`` keeps the first rows, like lm-eval's ``--limit``.
    """
    import datasets  # slow to import; only loading needs it

    spec = get_spec(task)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise NLReproError(f"task {task}: limit must be a positive integer or null, got {limit!r}")
    if path is None:
        config = f"/{spec.hf_name}" if spec.hf_name else ""
        source = f"hf:{spec.hf_path}{config}:{spec.split}"
        try:
            ds = datasets.load_dataset(spec.hf_path, spec.hf_name, split=spec.split)
        except Exception as exc:  # network, auth and hub-layout errors all mean the same here
            raise NLReproError(
                f"task {task}: cannot load {source} ({_one_line(exc)}); give a local file instead"
            ) from exc
    else:
        file = Path(path)
        source = str(file)
        builder = _LOCAL_FORMATS.get(file.suffix.lower())
        if builder is None:
            raise NLReproError(
                f"task {task}: {file}: unsupported file type '{file.suffix}' "
                f"(expected {', '.join(_LOCAL_FORMATS)})"
            )
        if not file.is_file():
            raise NLReproError(f"task {task}: {file}: no such file")
        if not file.read_bytes().strip():
            raise NLReproError(f"task {task}: {file}: file is empty")
        try:
            ds = datasets.load_dataset(builder, data_files=str(file), split="train")
        except Exception as exc:
            raise NLReproError(
                f"task {task}: {file}: not readable as {builder} ({_one_line(exc)})"
            ) from exc
    if len(ds) == 0:
        raise NLReproError(f"task {task}: {source}: file is empty (no rows)")
    missing = [field for field in spec.fields if field not in ds.column_names]
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        raise NLReproError(
            f"task {task}: {source}: missing field{'s' if len(missing) > 1 else ''} {names} "
            f"(has: {', '.join(ds.column_names)})"
        )
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds.to_list(), source


def build_examples(
    task: str, docs: list[dict[str, Any]], source: str = "<memory>"
) -> list[Example]:
    """One example per row; a bad row raises ``NLReproError`` naming task, source, row, field."""
    spec = get_spec(task)
    examples = []
    for doc_id, doc in enumerate(docs):
        missing = [field for field in spec.fields if field not in doc]
        try:
            if missing:
                raise _BadRow(missing[0], "is missing")
            examples.append(spec.build(doc_id, doc))
        except _BadRow as exc:
            raise NLReproError(f"task {task}: {source}: row {doc_id}: {exc}") from None
    return examples


def docs_sha256(docs: list[dict[str, Any]]) -> str:
    """A hash of the rows themselves, the same whether they came from the hub or a file."""
    blob = json.dumps(docs, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def load_task(task: str, path: str | Path | None = None, *, limit: int | None = None) -> TaskData:
    """Load, validate and build a task in one call: every input error surfaces here."""
    docs, source = load_docs(task, path, limit=limit)
    examples = build_examples(task, docs, source)
    return TaskData(get_spec(task), source, docs, examples, docs_sha256(docs))

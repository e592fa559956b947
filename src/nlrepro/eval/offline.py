"""The offline suite's passage tasks, built from the held-out TEST split of the corpus
(``data/shards/test``): nothing here was trained on, and nothing needs the hub.

* ``perplexity``: rolling log-likelihood of test documents (lm-eval's wikitext scoring:
  disjoint windows of ``max_len``), reported per token, per UTF-8 byte and in bits per byte.
* ``last_word``: LAMBADA-style. A passage ending in a word; the context is the text
  before it, the target is ``" " + word``; acc = the whole word is the greedy
  continuation, perplexity = exp(-mean log-likelihood of the target).
* ``choice``: HellaSwag-style. A context and ``num_choices`` continuations of the same
  number of words: the real one and spans of other test documents (of the same source
  when there are any); acc and acc_norm (per character) as lm-eval computes them.

Every choice is seeded (``seed``) and documents are visited round-robin over sources in a
seeded order, so each source is represented whatever its share of the split.
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from nlrepro.data.shards import read_split
from nlrepro.errors import NLReproError
from nlrepro.eval.config import ChoiceConfig, LastWordConfig, PerplexityConfig
from nlrepro.eval.metrics import choice_metrics, choice_record, target_metrics, target_record
from nlrepro.eval.tasks import ChoiceExample, TargetExample, docs_sha256


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str
    text: str


def heldout_documents(shard_dir: str | Path, sources: Optional[Sequence[str]] = None,
                      split: str = "test") -> list[Document]:
    """The ``split``'s documents (of ``sources``, or all), in shard order."""
    shard_dir = Path(shard_dir)
    manifest_path = shard_dir / "manifest.json"
    if not manifest_path.exists():
        raise NLReproError(f"{manifest_path}: not found (run the shard stage first)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    table = read_split(shard_dir, manifest, split).to_pylist()
    docs = [Document(r["doc_id"], r["source"], r["text"]) for r in table]
    if sources is not None:
        unknown = sorted(set(sources) - {d.source for d in docs})
        if unknown:
            raise NLReproError(f"eval.sources: no {split} documents of source '{unknown[0]}' "
                               f"(the {split} split has: {', '.join(sorted({d.source for d in docs}))})")
        docs = [d for d in docs if d.source in sources]
    if not docs:
        raise NLReproError(f"{shard_dir}: the {split} split is empty; raise data.split.{split}_frac")
    return docs


def documents_sha256(docs: Sequence[Document]) -> str:
    return docs_sha256([{"doc_id": d.doc_id, "source": d.source, "text": d.text} for d in docs])


def round_robin(docs: Sequence[Document], rng: np.random.Generator) -> list[Document]:
    """Each source's documents in a seeded order, interleaved source by source."""
    by_source: dict[str, list[Document]] = defaultdict(list)
    for d in docs:
        by_source[d.source].append(d)
    queues = [[group[i] for i in rng.permutation(len(group))]
              for _, group in sorted(by_source.items())]
    out = []
    for i in range(max(len(q) for q in queues)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def cut_at_space(text: str, max_chars: int) -> str:
    """The first ``max_chars`` characters, shortened to end before a whitespace."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars + 1]
    cut = max(head.rfind(" "), head.rfind("\n"))
    return text[:cut] if cut > 0 else text[:max_chars]


def context_before(text: str, end: int, max_chars: int) -> str:
    """``text[start:end]`` with ``start`` the first word start at most ``max_chars`` back."""
    start = max(0, end - max_chars)
    if start > 0 and not text[start - 1].isspace():
        nxt = re.search(r"\s", text[start:end])
        start = start + nxt.end() if nxt else end
    word = re.search(r"\S", text[start:end])
    return text[start + word.start():end] if word else ""


# --- perplexity ----------------------------------------------------------------------

def evaluate_perplexity(scorer, docs: Sequence[Document], cfg: PerplexityConfig, seed: int
                        ) -> tuple[dict[str, Any], list[dict], str]:
    chosen = round_robin(docs, np.random.default_rng((seed, 1)))[:cfg.docs]
    texts = [cut_at_space(d.text, cfg.max_chars) for d in chosen]
    lls = scorer.loglikelihood_rolling(texts)
    records = [{"doc_id": d.doc_id, "source": d.source, "text": t, "loglik": ll,
                "tokens": len(scorer.encode(t)), "bytes": len(t.encode("utf-8"))}
               for d, t, ll in zip(chosen, texts, lls)]
    metrics = perplexity_metrics(records, scorer.vocab_size)
    return metrics, records, docs_sha256([{"doc_id": d.doc_id, "text": t} for d, t in zip(chosen, texts)])


def _pooled(records: Sequence[dict]) -> tuple[float, int, int]:
    return (sum(r["loglik"] for r in records), sum(r["tokens"] for r in records),
            sum(r["bytes"] for r in records))


def perplexity_metrics(records: Sequence[dict], vocab_size: int) -> dict[str, Any]:
    """Pooled over documents; chance is the uniform distribution over the vocabulary."""
    loglik, tokens, n_bytes = _pooled(records)
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_source[r["source"]].append(r)
    uniform = tokens * math.log(vocab_size)
    return {
        "token_perplexity": math.exp(-loglik / tokens),
        "byte_perplexity": math.exp(-loglik / n_bytes),
        "bits_per_byte": -loglik / (n_bytes * math.log(2)),
        "token_perplexity_by_source": {s: math.exp(-_pooled(rs)[0] / _pooled(rs)[1])
                                       for s, rs in sorted(by_source.items())},
        "chance": {"token_perplexity": float(vocab_size),
                   "byte_perplexity": math.exp(uniform / n_bytes),
                   "bits_per_byte": uniform / (n_bytes * math.log(2))},
        "n": len(records), "tokens": tokens, "bytes": n_bytes,
    }


# --- last word -------------------------------------------------------------------------

def last_word_examples(docs: Sequence[Document], cfg: LastWordConfig, seed: int
                       ) -> list[tuple[Document, TargetExample]]:
    """Passages ending in a word of at least ``min_word_chars`` letters that follows a
    space and is followed by whitespace or punctuation (the LAMBADA split: the context is
    everything before that space)."""
    word = re.compile(rf"(?<= )[A-Za-z]{{{cfg.min_word_chars},}}(?=[\s.,;:!?]|$)")
    rng = np.random.default_rng((seed, 2))
    candidates = {d.doc_id: [m for m in word.finditer(d.text) if m.start() - 1 >= cfg.context_chars]
                  for d in docs}
    out: list[tuple[Document, TargetExample]] = []
    order = [d for d in round_robin(docs, rng) if candidates[d.doc_id]]
    while order and len(out) < cfg.samples:
        for d in list(order):
            pool = candidates[d.doc_id]
            m = pool.pop(int(rng.integers(len(pool))))
            context = context_before(d.text, m.start() - 1, cfg.context_chars)
            out.append((d, TargetExample(len(out), context, " " + m.group())))
            if not pool:
                order.remove(d)
            if len(out) == cfg.samples:
                break
    if not out:
        raise NLReproError(f"eval.last_word: no test passage has {cfg.context_chars} characters "
                           f"before a word; lower eval.last_word.context_chars")
    return out


def evaluate_last_word(scorer, docs: Sequence[Document], cfg: LastWordConfig, seed: int
                       ) -> tuple[dict[str, Any], list[dict], str]:
    examples = last_word_examples(docs, cfg, seed)
    results = scorer.loglikelihood([ex.requests[0] for _, ex in examples])
    records = [{**target_record(ex, r), "doc": d.doc_id, "source": d.source,
                "target_tokens": len(scorer.encode(ex.target))}
               for (d, ex), r in zip(examples, results)]
    metrics = target_metrics(records)
    # chance: a uniform distribution over the vocabulary, whose greedy pick is arbitrary
    n_tok = [r["target_tokens"] for r in records]
    metrics["chance"] = {
        "acc": float(np.mean([scorer.vocab_size ** -n for n in n_tok])),
        "perplexity": math.exp(float(np.mean(n_tok)) * math.log(scorer.vocab_size)),
    }
    metrics["n"] = len(records)
    return metrics, records, examples_sha256([ex for _, ex in examples])


# --- which continuation is real ---------------------------------------------------------

def _spans(text: str, n_words: int) -> list[tuple[int, int]]:
    """(start, end) of every run of ``n_words`` words starting after a space."""
    words = list(re.finditer(r"\S+", text))
    return [(words[i].start(), words[i + n_words - 1].end())
            for i in range(len(words) - n_words + 1)
            if words[i].start() > 0 and text[words[i].start() - 1] == " "]


def choice_examples(docs: Sequence[Document], cfg: ChoiceConfig, seed: int
                    ) -> list[tuple[Document, ChoiceExample]]:
    """Context = the text before a space; the real choice = the next ``continuation_words``
    words; distractors = word runs of the same length from other documents (same source
    first), never equal to the real one or to each other. Gold position is random."""
    if len({d.doc_id for d in docs}) < 2:
        raise NLReproError("eval.choice: the test split needs at least two documents for distractors")
    rng = np.random.default_rng((seed, 3))
    spans = {d.doc_id: _spans(d.text, cfg.continuation_words) for d in docs}
    real = {d.doc_id: [s for s in spans[d.doc_id] if s[0] - 1 >= cfg.context_chars] for d in docs}
    by_source: dict[str, list[Document]] = defaultdict(list)
    for d in docs:
        if spans[d.doc_id]:
            by_source[d.source].append(d)
    out: list[tuple[Document, ChoiceExample]] = []
    order = [d for d in round_robin(docs, rng) if real[d.doc_id]]
    while order and len(out) < cfg.samples:
        for d in list(order):
            pool = real[d.doc_id]
            start, end = pool.pop(int(rng.integers(len(pool))))
            if not pool:
                order.remove(d)
            truth = d.text[start:end]
            others = [o for o in by_source[d.source] if o.doc_id != d.doc_id] or \
                [o for group in by_source.values() for o in group if o.doc_id != d.doc_id]
            choices = [truth]
            for _ in range(50 * cfg.num_choices):  # rare collisions only
                if len(choices) == cfg.num_choices or not others:
                    break
                other = others[int(rng.integers(len(others)))]
                s, e = spans[other.doc_id][int(rng.integers(len(spans[other.doc_id])))]
                if other.text[s:e] not in choices:
                    choices.append(other.text[s:e])
            if len(choices) < cfg.num_choices:
                continue
            gold = int(rng.integers(cfg.num_choices))
            choices[0], choices[gold] = choices[gold], choices[0]
            context = context_before(d.text, start - 1, cfg.context_chars)
            requests = tuple((context, " " + c) for c in choices)
            out.append((d, ChoiceExample(len(out), requests, tuple(choices), gold)))
            if len(out) == cfg.samples:
                break
    if not out:
        raise NLReproError(f"eval.choice: no test passage has {cfg.context_chars} characters "
                           f"before {cfg.continuation_words} words; lower eval.choice.context_chars")
    return out


def evaluate_choice(scorer, docs: Sequence[Document], cfg: ChoiceConfig, seed: int
                    ) -> tuple[dict[str, Any], list[dict], str]:
    examples = choice_examples(docs, cfg, seed)
    results = iter(scorer.loglikelihood([r for _, ex in examples for r in ex.requests]))
    records = [{**choice_record(ex, [next(results) for _ in ex.requests]),
                "doc": d.doc_id, "source": d.source} for d, ex in examples]
    metrics = choice_metrics(records)
    metrics["chance"] = {"acc": 1.0 / cfg.num_choices, "acc_norm": 1.0 / cfg.num_choices}
    metrics["n"] = len(records)
    return metrics, records, examples_sha256([ex for _, ex in examples])


def examples_sha256(examples: Sequence[Any]) -> str:
    """A hash of the requests a task sent (its data, as the scorer saw it)."""
    return docs_sha256([{"requests": [list(r) for r in ex.requests]} for ex in examples])

"""Retrieval documents measured in tokens: passkeys and key-value records recalled at an
exact token distance, and training rows that mix them with the corpus.

The long-context study (``studies/long_context``, docs/LONG_CONTEXT.md) trains and
evaluates on the same format, built here from token pieces that each start at a
pre-tokenizer boundary (a leading space or newline), so the concatenation of the pieces is
the tokenizer's own encoding of the text and every length is exact:

    passkey:  INTRO <prefix filler> NEEDLE(K) <gap filler> QUESTION | " K" "."
    kv:       KV_INTRO RECORDS(.., key=V, ..) <gap filler> KV_QUESTION(key) | " V" "."

``|`` is the answer position. The *distance* of a document is the number of tokens from
the first token of the fact (the needle or the record asked about) to the answer
position, so a model whose attention sees ``window`` tokens can read the fact only when
``distance <= window`` (the fact's first key token sits three tokens after its start).
Everything derives from the ``numpy`` generator passed in; the caller seeds it per row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from nlrepro.data.synthetic import _KEY_A, _KEY_B, filler

Encode = Callable[[str], list[int]]

INTRO = "There is an important passkey hidden in this text. Remember it."
QUESTION = "\nWhat is the passkey? The passkey is"
KV_INTRO = "Here is a list of records to remember."
REPEAT_INTRO = "Here are some numbers. Repeat them later:"
REPEAT_AGAIN = "\nNow repeat the numbers:"
PASSKEY_RANGE = (10_000, 100_000)
VALUE_RANGE = (1000, 10_000)
PAD_WORD = " the"


def needle(key: str) -> str:
    return f" The passkey is {key}. Remember it. {key} is the passkey."


def record(name: str, value: str) -> str:
    return f" The value of {name} is {value}."


def kv_question(name: str) -> str:
    return f"\nQuestion: what is the value of {name}? Answer: the value of {name} is"


@dataclass(frozen=True)
class RetrievalDoc:
    """One document: ``ids`` (prompt then answer), where the answer starts, the fact's
    first token and the answer text (``" " + key``)."""

    kind: str
    ids: list[int]
    answer_pos: int    # index in ids of the first answer token (= prompt length)
    fact_pos: int      # index in ids of the fact's first token
    answer: str

    @property
    def distance(self) -> int:
        return self.answer_pos - self.fact_pos


def filler_tokens(encode: Encode, rng: np.random.Generator, budget: int) -> tuple[list[int], list[int]]:
    """Exactly ``budget`` tokens of filler sentences and the offsets of sentence ends (the
    places a fact may go). The last sentence is cut short and closed with a period; a token
    still missing is ``PAD_WORD`` (one token, checked)."""
    if budget < 0:
        raise ValueError(f"filler budget must be >= 0, got {budget}")
    pad, period = encode(PAD_WORD), encode(".")
    if len(pad) != 1:
        raise ValueError(f"the tokenizer does not encode {PAD_WORD!r} as one token")
    body: list[int] = []
    bounds = [0]
    while True:
        pieces = [encode(" " + word) for word in filler(rng, 1).split(" ")]
        if len(body) + sum(map(len, pieces)) > budget:
            break
        body += [t for p in pieces for t in p]
        bounds.append(len(body))
    words = 0
    for piece in pieces[:-1]:
        if len(body) + len(piece) + len(period) > budget:
            break
        body += piece
        words += 1
    if words:
        body += period
    body += pad * (budget - len(body))
    if bounds[-1] != len(body):
        bounds.append(len(body))
    return body, bounds


def overhead(encode: Encode, kind: str, num_pairs: int = 1) -> int:
    """Tokens of a document other than the fillers, for the longest key (an upper bound
    used to check that a distance fits)."""
    if kind == "passkey":
        return len(encode(INTRO)) + len(encode(needle("99999"))) + len(encode(QUESTION)) + 7
    if kind == "repeat":
        return len(encode(REPEAT_INTRO)) + len(encode(REPEAT_AGAIN)) + 2 * len(encode(" 99999")) + 4
    name = f"{_KEY_A[0]}-{_KEY_B[0]}"
    return (len(encode(KV_INTRO)) + num_pairs * len(encode(record(name, "9999")))
            + len(encode(kv_question(name))) + 6)


def prefix_for(depth: float, gap: int) -> int:
    """Filler tokens before the needle so that they are ``depth`` of all filler tokens."""
    if not 0.0 <= depth < 1.0:
        raise ValueError(f"depth must be in [0, 1), got {depth}")
    return int(round(depth * gap / (1.0 - depth)))


def passkey_doc(encode: Encode, rng: np.random.Generator, distance: int, prefix: int = 0,
                depth: float | None = None) -> RetrievalDoc:
    """A passkey document whose needle starts ``distance`` tokens before the answer, after
    exactly ``prefix`` filler tokens, or (``depth`` given) after as many as make them
    ``depth`` of all filler tokens."""
    key = str(int(rng.integers(*PASSKEY_RANGE)))
    head, mid, tail = encode(INTRO), encode(needle(key)), encode(QUESTION)
    gap = distance - len(mid) - len(tail)
    if gap < 0:
        raise ValueError(f"distance {distance} is shorter than the needle and question "
                         f"({len(mid) + len(tail)} tokens)")
    if depth is not None:
        prefix = prefix_for(depth, gap)
    pre, _ = filler_tokens(encode, rng, prefix)
    body, _ = filler_tokens(encode, rng, gap)
    prompt = head + pre + mid + body + tail
    answer = " " + key
    return RetrievalDoc("passkey", prompt + encode(answer) + encode("."), len(prompt),
                        len(head) + len(pre), answer)


def kv_doc(encode: Encode, rng: np.random.Generator, distance: int, num_pairs: int) -> RetrievalDoc:
    """``num_pairs`` records, then a filler, then the value of one of them; the record
    asked about starts ``distance`` tokens before the answer."""
    picks = rng.permutation(len(_KEY_A) * len(_KEY_B))[:num_pairs]
    names = [f"{_KEY_A[k // len(_KEY_B)]}-{_KEY_B[k % len(_KEY_B)]}" for k in picks]
    values = [str(int(rng.integers(*VALUE_RANGE))) for _ in names]
    asked = int(rng.integers(num_pairs))
    recs = [encode(record(n, v)) for n, v in zip(names, values)]
    head, tail = encode(KV_INTRO), encode(kv_question(names[asked]))
    after = sum(len(r) for r in recs[asked:])   # the asked record and those after it
    gap = distance - after - len(tail)
    if gap < 0:
        raise ValueError(f"distance {distance} is shorter than the records and question "
                         f"({after + len(tail)} tokens)")
    body, _ = filler_tokens(encode, rng, gap)
    prompt = head + [t for r in recs for t in r] + body + tail
    answer = " " + values[asked]
    fact = len(head) + sum(len(r) for r in recs[:asked])
    return RetrievalDoc("kv", prompt + encode(answer) + encode("."), len(prompt), fact, answer)


def repeat_doc(encode: Encode, rng: np.random.Generator, distance: int) -> RetrievalDoc:
    """Random 5-digit numbers, then the request to repeat them, then the same numbers: every
    token of the second copy is recalled from ``distance`` tokens back (the fact is the
    first number, the answer the second copy; the dense signal that grows copying)."""
    again = encode(REPEAT_AGAIN)
    numbers, body = [], []
    while not numbers or len(body) + len(again) + 1 < distance:
        numbers.append(str(int(rng.integers(*PASSKEY_RANGE))))
        body += encode(" " + numbers[-1])
    body += encode(".")
    head = encode(REPEAT_INTRO)
    prompt = head + body + again
    copy = body
    return RetrievalDoc("repeat", prompt + copy, len(prompt), len(head), " " + " ".join(numbers))


def log_uniform_distance(rng: np.random.Generator, lo: int, hi: int) -> int:
    """An integer distance drawn log-uniformly from [lo, hi]."""
    if not 1 <= lo <= hi:
        raise ValueError(f"distance range must satisfy 1 <= lo <= hi, got [{lo}, {hi}]")
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def retrieval_row(encode: Encode, rng: np.random.Generator, row_len: int, eos: int,
                  corpus: np.ndarray, dist_range: tuple[int, int], kinds: Sequence[str],
                  num_pairs: int) -> tuple[np.ndarray, list[dict]]:
    """A training row of exactly ``row_len`` tokens: retrieval documents (each followed by
    ``eos``) while one still fits, then the corpus stream ``corpus`` (a random window of
    it) to the end. Each document's distance is log-uniform in ``dist_range`` capped by the
    room left; a passkey's prefix is a random share of what remains. Returns the row and
    one record per document (kind, start, distance, answer position)."""
    out: list[int] = []
    docs: list[dict] = []
    lo, hi = dist_range
    while True:
        room = row_len - len(out) - 1
        kind = kinds[int(rng.integers(len(kinds)))]
        need = overhead(encode, kind, num_pairs)
        top = min(hi, room - need)
        if top < max(lo, need):
            break
        distance = log_uniform_distance(rng, max(lo, need), top)
        if kind == "passkey":
            spare = room - overhead(encode, kind) - distance
            doc = passkey_doc(encode, rng, distance, int(rng.integers(0, max(spare, 0) // 2 + 1)))
        elif kind == "repeat":
            doc = repeat_doc(encode, rng, distance)
        else:
            doc = kv_doc(encode, rng, distance, num_pairs)
        if len(doc.ids) + 1 > room + 1:
            break
        docs.append({"kind": kind, "start": len(out), "distance": doc.distance,
                     "answer_pos": len(out) + doc.answer_pos})
        out += doc.ids + [eos]
    rest = row_len - len(out)
    if rest > len(corpus):
        raise ValueError(f"the corpus stream ({len(corpus)} tokens) is shorter than a row's rest ({rest})")
    if rest > 0:
        start = int(rng.integers(0, len(corpus) - rest + 1))
        out += [int(t) for t in corpus[start:start + rest]]
    return np.asarray(out[:row_len], dtype=np.int64), docs

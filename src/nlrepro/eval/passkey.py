"""Passkey retrieval: a 5-digit key hidden at a chosen depth of a haystack whose length is
exact in tokens of our tokenizer, retrieved by greedy decoding.

The prompt follows the synthetic training documents (``nlrepro.data.synthetic``):

    There is an important passkey hidden in this text. Remember it. <filler ...>
    The passkey is 48213. Remember it. 48213 is the passkey. <... filler>
    What is the passkey? The passkey is

and the answer is correct only if the greedy continuation is exactly " 48213" followed by
a non-digit: a near miss, a longer number or a missing space all score 0, so chance is
one in 90,000 (the number of 5-digit keys). The prompt is built from token pieces that
each start at a pre-tokenizer boundary (a leading space or newline), so their
concatenation is the tokenizer's own encoding of the text and its length is exact.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from nlrepro.eval.config import PasskeyConfig
from nlrepro.data.retrieval import PAD_WORD, filler_tokens
from nlrepro.errors import NLReproError
from nlrepro.eval.tasks import docs_sha256
from nlrepro.progress import Progress

INTRO = "There is an important passkey hidden in this text. Remember it."
QUESTION = "\nWhat is the passkey? The passkey is"
KEY_RANGE = (10_000, 100_000)
CHANCE = 1.0 / (KEY_RANGE[1] - KEY_RANGE[0])


def needle(key: str) -> str:
    return f" The passkey is {key}. Remember it. {key} is the passkey."


@dataclass(frozen=True)
class Haystack:
    length: int        # prompt tokens (exact)
    depth: float       # requested needle depth in the filler, 0..1
    sample: int
    key: str
    ids: list[int]     # the prompt's tokens
    needle_pos: int    # token index where the needle starts

    @property
    def target(self) -> str:
        return " " + self.key


def build_haystack(encode: Callable[[str], list[int]], length: int, depth: float,
                   rng: np.random.Generator, sample: int = 0) -> Haystack:
    """A prompt of exactly ``length`` tokens with the needle at the sentence boundary of
    the filler closest to ``depth`` of the way through it."""
    key = str(int(rng.integers(*KEY_RANGE)))
    head, mid, tail = encode(INTRO), encode(needle(key)), encode(QUESTION)
    budget = length - len(head) - len(mid) - len(tail)
    if budget < 0:
        raise NLReproError(f"eval.passkey.lengths: {length} tokens cannot hold the intro, needle "
                           f"and question ({length - budget} tokens)")
    pad = encode(PAD_WORD)
    if len(pad) != 1:
        raise NLReproError(f"passkey: the tokenizer does not encode {PAD_WORD!r} as one token")
    body, bounds = filler_tokens(encode, rng, budget)
    cut = min(bounds, key=lambda b: (abs(b - depth * budget), b))
    ids = head + body[:cut] + mid + body[cut:] + tail
    return Haystack(length, depth, sample, key, ids, len(head) + cut)


def build_haystacks(encode: Callable[[str], list[int]], cfg: PasskeyConfig, seed: int
                    ) -> list[Haystack]:
    """Every (length, depth, sample), each from its own seeded generator."""
    encode = functools.lru_cache(maxsize=None)(encode)  # filler words repeat; pieces are not mutated
    out = []
    for length in cfg.lengths:
        for d, depth in enumerate(cfg.depths):
            for s in range(cfg.samples):
                rng = np.random.default_rng((seed, 7919, length, d, s))
                out.append(build_haystack(encode, length, depth, rng, s))
    return out


def is_exact_retrieval(generated: str, key: str) -> bool:
    """The greedy text is " <key>" and the number ends there."""
    answer = " " + key
    return generated.startswith(answer) and not generated[len(answer):len(answer) + 1].isdigit()


def evaluate_passkey(scorer, cfg: PasskeyConfig, seed: int) -> tuple[dict[str, Any], list[dict], str]:
    """Metrics (accuracy overall, by length, by depth and per cell, with chance) and one
    record per haystack. Haystacks of one length share batches (their positions align)."""
    haystacks = build_haystacks(scorer.encode, cfg, seed)
    records: list[dict] = []
    progress = Progress("eval passkey", total=sum(h.length for h in haystacks), unit="tokens")
    by_length: dict[int, list[Haystack]] = defaultdict(list)
    for h in haystacks:
        by_length[h.length].append(h)
    for length, group in by_length.items():
        for start in range(0, len(group), scorer.batch_size):
            batch = group[start:start + scorer.batch_size]
            prompts = torch.tensor([h.ids for h in batch], dtype=torch.long)
            targets = [scorer.encode(h.target) for h in batch]
            new_tokens = max(len(h.key) for h in batch) + 2  # enough to see the number end
            generated, scored = scorer.greedy_after(prompts, targets, new_tokens)
            for h, gen, (loglik, greedy) in zip(batch, generated, scored):
                text = scorer.decode(gen)
                records.append({
                    "length": h.length, "depth": h.depth, "sample": h.sample,
                    "needle_pos": h.needle_pos, "key": h.key,
                    "prompt": scorer.decode(h.ids), "continuation": h.target,
                    "loglik": loglik, "is_greedy": greedy, "generated": text,
                    "correct": is_exact_retrieval(text, h.key),
                })
            progress.update(length * len(batch))
    progress.close()
    return passkey_metrics(records, cfg), records, docs_sha256([{"ids": h.ids} for h in haystacks])


def _acc(records: Sequence[dict]) -> float:
    return sum(r["correct"] for r in records) / len(records)


def passkey_metrics(records: Sequence[dict], cfg: PasskeyConfig) -> dict[str, Any]:
    cells: dict[tuple[int, float], list[dict]] = defaultdict(list)
    for r in records:
        cells[(r["length"], r["depth"])].append(r)
    lengths = {L: [r for r in records if r["length"] == L] for L in cfg.lengths}
    depths = {d: [r for r in records if r["depth"] == d] for d in cfg.depths}
    return {
        "acc": _acc(records),
        "chance": CHANCE,
        "n": len(records),
        "acc_by_length": {str(L): _acc(rs) for L, rs in lengths.items()},
        "acc_by_depth": {str(d): _acc(rs) for d, rs in depths.items()},
        "acc_grid": {str(L): {str(d): _acc(cells[(L, d)]) for d in cfg.depths} for L in cfg.lengths},
        # a smoother signal than accuracy for small models: mean log-likelihood of the key
        "key_loglik_by_length": {str(L): sum(r["loglik"] for r in rs) / len(rs)
                                 for L, rs in lengths.items()},
    }

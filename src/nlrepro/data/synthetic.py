"""Seeded synthetic memory documents: passkey retrieval and key-value recall.

Each document states facts, then a filler of ``distance`` words of random English-like
sentences, then asks for the fact and answers it. Training on them gives a tiny model a
reason to use its long-term memory; the distance is in words because the tokenizer is
trained later (evaluation measures haystacks in tokens with the trained tokenizer).
Everything derives from ``numpy.random.default_rng((seed, index))``, so a document does
not depend on how many others are generated.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

_ADJ = ("quiet", "green", "old", "bright", "small", "heavy", "gentle", "cold", "wild",
        "golden", "narrow", "distant", "silver", "broken", "warm", "hollow", "early",
        "patient", "crooked", "plain", "swift", "dusty", "pale", "proud")
_NOUN = ("river", "garden", "tower", "merchant", "lantern", "valley", "soldier", "letter",
         "window", "bridge", "harbor", "forest", "wagon", "candle", "sparrow", "market",
         "orchard", "shepherd", "chapel", "meadow", "anchor", "kettle", "mountain", "road",
         "village", "stranger", "mill", "field", "ship", "cottage")
_VERB = ("watches", "follows", "passes", "finds", "leaves", "crosses", "remembers",
         "carries", "greets", "circles", "reaches", "guards", "covers", "answers", "keeps")
_PLACE = ("near the", "beyond the", "under the", "across the", "behind the", "beside the",
          "toward the", "inside the")
_KEY_A = ("amber", "cobalt", "crimson", "ivory", "olive", "scarlet", "violet", "indigo",
          "copper", "jade", "ochre", "teal", "saffron", "umber", "azure", "russet")
_KEY_B = ("fox", "heron", "otter", "badger", "falcon", "lynx", "raven", "wolf", "hare",
          "owl", "stag", "crane", "marten", "wren", "boar", "swan")


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    return words[int(rng.integers(len(words)))]


def filler(rng: np.random.Generator, n_words: int) -> str:
    """About ``n_words`` words of grammatical, meaningless sentences (the haystack)."""
    sentences, count = [], 0
    while count < n_words:
        s = (f"The {_pick(rng, _ADJ)} {_pick(rng, _NOUN)} {_pick(rng, _VERB)} the "
             f"{_pick(rng, _NOUN)} {_pick(rng, _PLACE)} {_pick(rng, _ADJ)} {_pick(rng, _NOUN)}.")
        sentences.append(s)
        count += len(s.split())
    return " ".join(sentences)


def passkey_document(rng: np.random.Generator, distance: int) -> str:
    key = int(rng.integers(10_000, 100_000))
    return (f"There is an important passkey hidden in this text. Remember it. "
            f"The passkey is {key}. Remember it. {key} is the passkey.\n"
            f"{filler(rng, distance)}\n"
            f"What is the passkey? The passkey is {key}.")


def kv_recall_document(rng: np.random.Generator, distance: int, num_pairs: int) -> str:
    keys = rng.permutation(len(_KEY_A) * len(_KEY_B))[:num_pairs]
    pairs = [(f"{_KEY_A[k // len(_KEY_B)]}-{_KEY_B[k % len(_KEY_B)]}",
              int(rng.integers(1000, 10_000))) for k in keys]
    records = " ".join(f"The value of {k} is {v}." for k, v in pairs)
    key, value = pairs[int(rng.integers(num_pairs))]
    return (f"Here is a list of records to remember. {records}\n"
            f"{filler(rng, distance)}\n"
            f"Question: what is the value of {key}? Answer: the value of {key} is {value}.")


def iter_documents(seed: int, num_docs: int, kinds: Sequence[str], distances: Sequence[int],
                   num_pairs: int) -> Iterator[tuple[str, str]]:
    """Yield ``(doc_id, text)``; kinds and distances cycle so every combination appears."""
    combos = [(kind, d) for kind in kinds for d in distances]
    for i in range(num_docs):
        kind, distance = combos[i % len(combos)]
        rng = np.random.default_rng((seed, i))
        if kind == "passkey":
            text = passkey_document(rng, distance)
        else:
            text = kv_recall_document(rng, distance, num_pairs)
        yield f"synthetic/{kind}/d{distance}/{i:07d}", text

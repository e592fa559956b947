"""Stage data: retrieval-heavy training rows mixed with the main corpus.

Reads the main pipeline's tokenizer and tokenised corpus (data/tokenizer, the token
shards of data/tokens, read only) and writes studies/long_context/data/tokens/
{train,val}.npy (rows of study.data.row_len tokens, uint16) and manifest.json, the layout the trainer reads.
A row is, with probability retrieval_frac, passkey / key-value documents at log-uniform
distances followed by corpus tokens to the end of the row, else a corpus window.
"""
from __future__ import annotations

import functools
import json
import sys
from collections import Counter

import numpy as np

from nlrepro.data.retrieval import retrieval_row
from nlrepro.data.token_shards import open_rows
from nlrepro.data.tokenizer import EOS, file_hash, load_tokenizer
from nlrepro.errors import NLReproError, cli_main
from nlrepro.io import atomic_path
from studies.long_context import config as C

SPLITS = {"train": 1, "val": 2}


def build_rows(encode, eos: int, corpus: np.ndarray, cfg: C.StudyData, n: int, seed: int,
               split_id: int) -> tuple[np.ndarray, dict]:
    rows = np.empty((n, cfg.row_len), dtype=np.uint16)
    kinds: Counter = Counter()
    distances: list[int] = []
    for i in range(n):
        rng = np.random.default_rng((seed, 104729, split_id, i))
        if rng.random() < cfg.retrieval_frac:
            row, docs = retrieval_row(encode, rng, cfg.row_len, eos, corpus,
                                      (cfg.min_distance, cfg.max_distance), cfg.kinds, cfg.num_pairs)
            kinds.update(d["kind"] for d in docs)
            distances += [d["distance"] for d in docs]
        else:
            start = int(rng.integers(0, len(corpus) - cfg.row_len + 1))
            row = corpus[start:start + cfg.row_len]
        rows[i] = row
    hist = Counter(int(np.log2(max(d, 1))) for d in distances)
    return rows, {"rows": n, "docs": dict(kinds), "retrieval_rows_frac": cfg.retrieval_frac,
                  "distance_log2_hist": {f"{2**k}-{2**(k+1)-1}": v for k, v in sorted(hist.items())},
                  "distance_mean": float(np.mean(distances)) if distances else None}


@cli_main
def main(argv: list[str]) -> None:
    params, study = C.load()
    tok = load_tokenizer(C.TOKENIZER)
    eos = tok.token_to_id(EOS)
    if tok.get_vocab_size() > 65536:
        raise NLReproError("study data: vocabulary above 65,536 does not fit uint16 rows")
    encode = functools.lru_cache(maxsize=None)(lambda s: tok.encode(s, add_special_tokens=False).ids)
    manifest = {"row_len": study.data.row_len, "eos_id": eos, "vocab_size": tok.get_vocab_size(),
                "tokenizer_sha256": file_hash(C.TOKENIZER), "splits": {}}
    C.TOKENS.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", study.data.train_rows), ("val", study.data.val_rows)):
        corpus = np.asarray(open_rows(C.CORPUS, split)).reshape(-1)   # the shards, concatenated
        rows, stats = build_rows(encode, eos, corpus, study.data, n, params.seed, SPLITS[split])
        with atomic_path(C.TOKENS / f"{split}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, rows)
        manifest["splits"][split] = stats
        print(f"study data {split}: {n} rows of {study.data.row_len}, docs {stats['docs']}")
    with atomic_path(C.TOKENS / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Stage tokenizer: train split sample -> data/tokenizer/{tokenizer.json, stats.json}.

Bounded memory: the train split is read twice a record batch at a time (lengths, then
the sampled documents), so the stage holds the sample (``data.tokenizer.sample_chars``),
8 bytes per train document, a batch of the val split (its first ``HELD_OUT_CHARS``
characters are scored) and the distinct words seen there."""
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from nlrepro.config import load_params
from nlrepro.data.shards import iter_split
from nlrepro.data.tokenizer import coverage_stats, file_hash, sample_order, train_tokenizer
from nlrepro.errors import cli_main
from nlrepro.io import atomic_dir, write_json

SHARDS = Path("data/shards")
# The held-out coverage statistics read the val split's first documents up to this many
# characters (plenty for the ratios they report).
HELD_OUT_CHARS = 5_000_000
BATCH = 256


def train_sample(manifest: dict, budget_chars: int, seed: int) -> list[str]:
    """``sample_texts`` of the train split, without holding the split."""
    lengths = np.concatenate([pc.utf8_length(b.column(0)).to_numpy(zero_copy_only=False)
                              for b in iter_split(SHARDS, manifest, "train", ["text"], BATCH)]
                             or [np.zeros(0, np.int64)]).astype(np.int64)
    order = sample_order(lengths, budget_chars, seed)
    wanted = set(order.tolist())
    texts, i = {}, 0
    for batch in iter_split(SHARDS, manifest, "train", ["text"], BATCH):
        for text in batch.column(0).to_pylist():
            if i in wanted:
                texts[i] = text
            i += 1
    return [texts[i] for i in order.tolist()]


def held_out_texts(manifest: dict):
    """The val split's documents, in order, until HELD_OUT_CHARS characters were read."""
    total = 0
    for batch in iter_split(SHARDS, manifest, "val", ["text"], BATCH):
        for text in batch.column(0).to_pylist():
            if total >= HELD_OUT_CHARS:
                return
            yield text
            total += len(text)


@cli_main
def main() -> None:
    params = load_params()
    cfg = params.data.tokenizer
    manifest = json.loads((SHARDS / "manifest.json").read_text())
    sample = train_sample(manifest, cfg.sample_chars, params.seed)
    tok = train_tokenizer(sample, cfg.vocab_size, cfg.min_frequency)
    held_out = held_out_texts(manifest)
    with atomic_dir("data/tokenizer") as out:
        tok.save(str(out / "tokenizer.json"))
        stats = {
            "vocab_size": tok.get_vocab_size(),
            "requested_vocab_size": cfg.vocab_size,
            "sha256": file_hash(out / "tokenizer.json"),
            "sample_docs": len(sample),
            "sample_chars": sum(len(t) for t in sample),
            "held_out": coverage_stats(tok, held_out),
        }
        write_json(out / "stats.json", stats)
    print(f"tokenizer: vocabulary {stats['vocab_size']:,} from {stats['sample_chars']:,} "
          f"characters, sha256 {stats['sha256'][:12]}")


if __name__ == "__main__":
    main()

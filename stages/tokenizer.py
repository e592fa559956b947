"""Stage tokenizer: train split sample -> data/tokenizer/{tokenizer.json, stats.json}."""
import json
from pathlib import Path

from nlrepro.config import load_params
from nlrepro.data.shards import read_split
from nlrepro.data.tokenizer import coverage_stats, file_hash, sample_texts, train_tokenizer
from nlrepro.errors import cli_main
from nlrepro.io import atomic_dir, write_json

SHARDS = Path("data/shards")


@cli_main
def main() -> None:
    params = load_params()
    cfg = params.data.tokenizer
    manifest = json.loads((SHARDS / "manifest.json").read_text())
    train = read_split(SHARDS, manifest, "train").column("text").to_pylist()
    sample = sample_texts(train, cfg.sample_chars, params.seed)
    tok = train_tokenizer(sample, cfg.vocab_size, cfg.min_frequency)
    held_out = read_split(SHARDS, manifest, "val").column("text").to_pylist()
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

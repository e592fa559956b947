"""Stage tokenize: shards + tokenizer -> data/tokens/{train,val,test}.npy + manifest,
and metrics/data.json (the data half's metrics in one file)."""
import json
from pathlib import Path

import numpy as np

from nlrepro.config import load_params
from nlrepro.data.shards import SPLITS, read_split
from nlrepro.data.tokenize import encode_documents, mixture_order, pack
from nlrepro.data.tokenizer import EOS, file_hash, load_tokenizer
from nlrepro.errors import NLReproError, cli_main
from nlrepro.io import atomic_dir, atomic_path, write_json
from nlrepro.progress import Progress

SHARDS, TOKENIZER = Path("data/shards"), Path("data/tokenizer")


@cli_main
def main() -> None:
    params = load_params()
    cfg = params.data.tokenize
    tok = load_tokenizer(TOKENIZER / "tokenizer.json")
    eos_id = tok.token_to_id(EOS)
    manifest = json.loads((SHARDS / "manifest.json").read_text())
    weights = {name: src.weight for name, src in params.data.sources.items()}
    out_manifest = {"row_len": cfg.row_len, "eos_id": eos_id,
                    "vocab_size": tok.get_vocab_size(),
                    "tokenizer_sha256": file_hash(TOKENIZER / "tokenizer.json"), "splits": {}}
    with atomic_dir("data/tokens") as out:
        for split in SPLITS:
            table = read_split(SHARDS, manifest, split)
            texts = table.column("text").to_pylist()
            sources = table.column("source").to_pylist()
            progress = Progress(f"tokenize {split}", total=len(texts), unit="docs")
            docs = encode_documents(tok, texts, cfg.batch_docs)
            progress.update(len(texts))
            progress.close()
            if split == "train":
                order = mixture_order(table.column("doc_id").to_pylist(), sources, weights,
                                      params.seed)
            else:
                order = list(range(len(docs)))
            rows, stream = pack(docs, order, eos_id, cfg.row_len)
            if split == "train" and len(rows) == 0:
                raise NLReproError(f"tokenize: the train split has {len(stream)} tokens, "
                                   f"fewer than one row of data.tokenize.row_len={cfg.row_len}")
            with atomic_path(out / f"{split}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, rows)
            per_source: dict[str, int] = {}
            for i in order:
                per_source[sources[i]] = per_source.get(sources[i], 0) + len(docs[i]) + 1
            out_manifest["splits"][split] = {
                "docs": len(order), "tokens": int(len(stream)), "rows": int(len(rows)),
                "dropped_tail_tokens": int(len(stream) - rows.size),
                "tokens_per_source": per_source, "dtype": str(rows.dtype),
            }
        write_json(out / "manifest.json", out_manifest)
    write_json("metrics/data.json", data_metrics(out_manifest))
    counts = ", ".join(f"{s} {v['tokens']:,}" for s, v in out_manifest["splits"].items())
    print(f"tokenize: {counts} tokens")


def data_metrics(tokens: dict) -> dict:
    """Everything the data stages measured, in one metrics file."""
    filt = json.loads(Path("data/filtered/stats.json").read_text())
    tok = json.loads((TOKENIZER / "stats.json").read_text())
    shards = json.loads((SHARDS / "manifest.json").read_text())
    sources = {}
    for name, s in filt["sources"].items():
        sources[name] = dict(s)
        for split in SPLITS:
            sources[name][f"{split}_docs"] = shards["splits"][split]["docs_per_source"].get(name, 0)
            sources[name][f"{split}_tokens"] = tokens["splits"][split]["tokens_per_source"].get(name, 0)
    return {
        "sources": sources,
        "filter_drops": filt["rules"],
        "near_duplicates_removed": filt["rules"]["near_dup"]["docs"],
        "tokens": {s: v["tokens"] for s, v in tokens["splits"].items()},
        "rows": {s: v["rows"] for s, v in tokens["splits"].items()},
        "tokenizer": {"vocab_size": tok["vocab_size"], "sha256": tok["sha256"],
                      **tok["held_out"]},
    }


if __name__ == "__main__":
    main()

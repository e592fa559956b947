"""Fixtures the evaluation tests build themselves: a tiny tokenizer, tiny models, a
held-out split on disk, a training checkpoint, and a hand-built copying model."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import torch
from torch import nn

from nlrepro.data.synthetic import iter_documents
from nlrepro.data.tokenizer import file_hash, train_tokenizer
from nlrepro.io import write_table
from nlrepro.model.config import InContextConfig
from nlrepro.model.lm import build_model
from nlrepro.model.presets import model_config
from nlrepro.train import checkpoint as ckpt
from nlrepro.train.checkpoint import DataIdentity, RunConfig
from nlrepro.train.config import TeachConfig, TrainConfig

SMALL = {"preset": "tiny", "d_model": 32, "n_layers": 2, "n_heads": 2, "mlp_width": 64,
         "memory": {"chunk": 8}, "selfmod": {"chunk": 8},
         "cms": {"levels": [{"chunk": 8, "width": 16}, {"chunk": 16, "width": 16}]}}
VARIANTS = ["transformer", "titan", "hope"]

PLAY = ("ACT I. SCENE I. A room in the castle.\n\nEnter HAMLET and HORATIO\n\n"
        "HAMLET:\nWhat news, my friend, from the cold harbour of the north? The wind is "
        "bitter and the night is long, and every watchman sleeps beside his fire.\n\n"
        "HORATIO:\nMy lord, the ship is come, and with it letters from your mother, "
        "sealed with wax and carried by a stranger who would not speak his name.\n\n"
        "HAMLET:\nThen bring the stranger here, and bring the letters, and bring a light; "
        "for I would read them now, before the morning takes the courage from my hand.\n")


def synthetic_texts(n: int = 40) -> list[str]:
    return [t for _, t in iter_documents(0, n, ("passkey", "kv_recall"), (16, 64), 4)]


def tiny_tokenizer(vocab_size: int = 400):
    return train_tokenizer(synthetic_texts() + [PLAY] * 3, vocab_size, 2)


def tiny_model(variant: str, vocab: int, seed: int = 0, dtype=torch.float64):
    torch.manual_seed(seed)
    return build_model(model_config({**SMALL, "type": variant}), vocab).to(dtype).eval()


def write_test_split(root: Path, docs: list[tuple[str, str, str]]) -> None:
    """``root/data/shards`` holding a test split of (doc_id, source, text) and the same
    documents as the val split (the in-context section reads val)."""
    shards = root / "data" / "shards"
    table = pa.table({"doc_id": [d[0] for d in docs], "source": [d[1] for d in docs],
                      "text": [d[2] for d in docs]})
    splits = {}
    for split in ("test", "val"):
        write_table(shards / split / "shard-00000.parquet", table)
        splits[split] = {"docs": len(docs), "shards": [{"file": f"{split}/shard-00000.parquet", "docs": len(docs)}]}
    manifest = {"docs_per_shard": len(docs), "splits": splits}
    (shards / "manifest.json").write_text(json.dumps(manifest))


def corpus_docs() -> list[tuple[str, str, str]]:
    """Play-like scenes (each a different arrangement) and synthetic documents."""
    paragraphs = PLAY.split("\n\n")
    plays = [(f"shakespeare/p{i}", "shakespeare", "\n\n".join(paragraphs[i:] + paragraphs[:i]) * 2)
             for i in range(4)]
    synth = [(f"synthetic/{i}", "synthetic", t) for i, t in enumerate(synthetic_texts(6))]
    return plays + synth


def write_project(root: Path, tokenizer, variant: str = "transformer", teach_scale: float = 0.5,
                  row_len: int = 65) -> None:
    """A scratch project with a tokenizer, a test split and models/<variant>-s0.pt as the train
    stage writes it."""
    tok_dir = root / "data" / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(tok_dir / "tokenizer.json"))
    write_test_split(root, corpus_docs())
    vocab = tokenizer.get_vocab_size()
    cfg = model_config({**SMALL, "type": variant})
    torch.manual_seed(0)
    model = build_model(cfg, vocab)
    run = RunConfig(variant=variant, seed=0, model=cfg, in_context=InContextConfig(),
                    teach_scale=teach_scale, teach=TeachConfig(), grad_clip=None,
                    train=TrainConfig(),
                    data=DataIdentity(file_hash(tok_dir / "tokenizer.json"), vocab, row_len, 1))
    state = ckpt.TrainingState(model, None, ckpt.Progress(step=3, teach_scale=teach_scale))
    state.save(root / "models" / f"{variant}-s0.pt", run, lineage={}, resumable=False)


class CopyingLM(nn.Module):
    """An induction-head stand-in: at each position it predicts the token that followed the
    last earlier occurrence of the current ``k``-gram (uniform when there is none).
    ``shift`` > 0 predicts a later token instead (a model that retrieves the wrong thing).
    It has the NestedLM interface the scorer uses (initial_state, forward, embed)."""

    def __init__(self, vocab: int, k: int = 3, shift: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab, 1)
        self.vocab, self.k, self.shift = vocab, k, shift

    def initial_state(self):
        return None

    def forward(self, tokens, state=None, teach_scale=1.0):
        rows = [list(r) for r in state] if state is not None else [[] for _ in range(len(tokens))]
        logits = torch.zeros(tokens.shape[0], tokens.shape[1], self.vocab)
        for b, row in enumerate(rows):
            for t, token in enumerate(tokens[b].tolist()):
                row.append(token)
                key = tuple(row[-self.k:])
                for j in range(len(row) - 2, self.k - 2, -1):
                    if tuple(row[j - self.k + 1:j + 1]) == key and j + 1 + self.shift < len(row):
                        logits[b, t, row[j + 1 + self.shift]] = 10.0
                        break
        return SimpleNamespace(logits=logits, state=[tuple(r) for r in rows], stats={})

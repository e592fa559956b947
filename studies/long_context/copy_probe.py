"""Diagnostic (not a stage): can a variant learn to copy, and how fast, on a pure synthetic
task? Each row is ``filler, key, gap filler, SEP, key``: ``key_len`` symbols from an
alphabet of ``alphabet`` tokens, the gap a random length in [0, max_gap] (0 for a fixed
offset), every filler token from symbols outside the alphabet. The loss and the accuracy
are on the copied key only. With a fixed offset the copy is positional (relative
position is enough); with a random gap it needs a content-addressed induction circuit,
which is what passkey retrieval needs. docs/LONG_CONTEXT.md quotes its output.

    PYTHONPATH=src python -m studies.long_context.copy_probe transformer --max-gap 40
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from nlrepro.errors import cli_main
from nlrepro.model.config import VARIANTS
from nlrepro.model.lm import build_model
from nlrepro.model.presets import model_config

SEP, FIRST = 1, 2          # token 0 unused; the key alphabet starts at FIRST


def copy_rows(g: torch.Generator, batch: int, key_len: int, alphabet: int, max_gap: int,
              vocab: int) -> torch.Tensor:
    """(batch, max_gap + 2 key_len + 1) rows, the copy right-aligned at the end."""
    rows = []
    for _ in range(batch):
        key = torch.randint(FIRST, FIRST + alphabet, (key_len,), generator=g)
        gap = int(torch.randint(0, max_gap + 1, (1,), generator=g))
        filler = torch.randint(FIRST + alphabet, vocab, (max_gap,), generator=g)
        rows.append(torch.cat([filler[gap:], key, filler[:gap], torch.tensor([SEP]), key]))
    return torch.stack(rows)


@cli_main
def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m studies.long_context.copy_probe")
    ap.add_argument("variant", choices=VARIANTS)
    ap.add_argument("--attention", default="swa", choices=["swa", "full"])
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--key-len", type=int, default=16)
    ap.add_argument("--alphabet", type=int, default=10)
    ap.add_argument("--max-gap", type=int, default=40)
    ap.add_argument("--every", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    vocab = FIRST + args.alphabet + 32
    cfg = model_config({"preset": "tiny", "type": args.variant, "attention": args.attention,
                        "window": args.window})
    model = build_model(cfg, vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    g, k, t0 = torch.Generator().manual_seed(args.seed + 1), args.key_len, time.monotonic()
    for step in range(args.steps + 1):
        x = copy_rows(g, args.batch, k, args.alphabet, args.max_gap, vocab)
        logits = model(x[:, :-1]).logits[:, -k:]
        target = x[:, -k:]
        loss = F.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0:
            acc = (logits.argmax(-1) == target).float().mean().item()
            print(f"step {step} loss {loss.item():.3f} copy_acc {acc:.3f} "
                  f"(chance {1 / args.alphabet:.3f}) {time.monotonic() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

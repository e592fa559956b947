"""Our model as an lm-eval scorer: ``loglikelihood`` and ``loglikelihood_rolling``.

Semantics (docs/EVAL_STAGE.md):

* every request starts from a fresh memory state (``model.initial_state()``: fast weights
  equal to the slow ones), and the in-context updates run causally over the prompt and
  the continuation with one teach scale;
* a batch is right-padded: the model is causal, so the padding after a row's last real
  token changes nothing that row is scored on, and a batch scores exactly what its rows
  score one at a time;
* inputs longer than ``stream_chunk`` are fed in pieces with the state carried, which the
  chunk recurrence makes identical to one call, with bounded activation memory.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nlrepro.data.tokenizer import EOS
from nlrepro.eval.requests import encode_pair, rolling_windows, truncate_left
from nlrepro.model.lm import ModelState, NestedLM

TokenPair = tuple[list[int], list[int]]  # (context ids, continuation ids)


def _score_dtype(t: Tensor) -> torch.dtype:
    """Log-softmax in at least float32 (a bfloat16 model), never below the model's dtype."""
    return torch.promote_types(t.dtype, torch.float32)


class ModelScorer:
    """``loglikelihood(requests) -> [(loglik, is_greedy)]`` and
    ``loglikelihood_rolling(texts) -> [loglik]`` for a ``NestedLM`` and a ``tokenizers``
    tokenizer. ``prefix_token`` (lm-eval's ``prefix_token_id``) conditions an empty
    context and the first rolling window: our tokenizer has no BOS, so its end-of-text
    token (``<|endoftext|>``, id 0), which also separates documents in training rows."""

    def __init__(self, model: NestedLM, tokenizer, teach_scale: float, max_len: int,
                 batch_size: int = 16, stream_chunk: Optional[int] = None,
                 on_batch: Optional[Callable[[int], None]] = None):
        self.model, self.tokenizer = model, tokenizer
        self.teach_scale, self.max_len, self.batch_size = float(teach_scale), max_len, batch_size
        self.stream_chunk = stream_chunk or max_len
        self.prefix_token = tokenizer.token_to_id(EOS)
        if self.prefix_token is None:
            raise ValueError(f"the tokenizer has no {EOS} token to condition empty contexts on")
        self.on_batch = on_batch  # called with the number of requests scored (progress)
        self.device = next(model.parameters()).device
        self.vocab_size = model.embed.num_embeddings

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    # --- the scorer interface -----------------------------------------------------

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        pairs = [encode_pair(self.encode, ctx, cont, self.prefix_token) for ctx, cont in requests]
        return self.score_pairs(pairs)

    def loglikelihood_rolling(self, texts: list[str]) -> list[float]:
        owners, pairs = [], []
        for i, text in enumerate(texts):
            for window in rolling_windows(self.encode(text), self.max_len, self.prefix_token):
                owners.append(i)
                pairs.append(window)
        totals = [0.0] * len(texts)
        for owner, (loglik, _) in zip(owners, self.score_pairs(pairs)):
            totals[owner] += loglik
        return totals

    # --- token level --------------------------------------------------------------

    def score_pairs(self, pairs: Sequence[TokenPair]) -> list[tuple[float, bool]]:
        """Summed log-probability of each continuation after its context, and whether every
        continuation token is the argmax. Requests are sorted longest first and batched."""
        inputs = [truncate_left(ctx, cont, self.max_len) for ctx, cont in pairs]
        order = sorted(range(len(pairs)), key=lambda i: -len(inputs[i]))
        results: list[tuple[float, bool]] = [(0.0, True)] * len(pairs)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                logits = self.forward_padded([inputs[i] for i in rows])
                for b, i in enumerate(rows):
                    cont = pairs[i][1]
                    if not cont:
                        continue
                    end = len(inputs[i])
                    rows_logits = logits[b, end - len(cont):end]
                    logp = F.log_softmax(rows_logits.to(_score_dtype(rows_logits)), dim=-1)
                    target = torch.tensor(cont, device=logp.device)
                    loglik = logp.gather(-1, target[:, None]).sum().item()
                    greedy = bool((logp.argmax(-1) == target).all())
                    results[i] = (loglik, greedy)
                if self.on_batch:
                    self.on_batch(len(rows))
        return results

    def forward_padded(self, rows: Sequence[Sequence[int]]) -> Tensor:
        """Logits (B, T, V) of right-padded rows, each from a fresh state."""
        length = max(len(r) for r in rows)
        x = torch.full((len(rows), length), self.prefix_token, dtype=torch.long)
        for b, r in enumerate(rows):
            x[b, :len(r)] = torch.tensor(r, dtype=torch.long)
        logits, _ = self.stream(x.to(self.device))
        return logits

    def stream(self, tokens: Tensor, state: Optional[ModelState] = None, last_only: bool = False
               ) -> tuple[Tensor, ModelState]:
        """Logits of ``tokens`` (B, T) fed ``stream_chunk`` at a time with the state carried
        (a fresh state when ``state`` is None); ``last_only`` keeps the last position's, in
        memory that does not grow with T: a copy, since the view ``logits[:, -1:]`` would
        hold each piece's whole (B, stream_chunk, V) logits alive."""
        state = self.model.initial_state() if state is None else state
        pieces = []
        for start in range(0, tokens.shape[1], self.stream_chunk):
            out = self.model(tokens[:, start:start + self.stream_chunk], state=state,
                             teach_scale=self.teach_scale)
            if last_only:
                pieces = [out.logits[:, -1:].clone()]
            else:
                pieces.append(out.logits)
            state = out.state
            del out
        return (pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)), state

    def greedy_after(self, prompts: Tensor, targets: Sequence[Sequence[int]], new_tokens: int
                     ) -> tuple[list[list[int]], list[tuple[float, bool]]]:
        """For equal-length prompts (B, T): the ``new_tokens`` greedy tokens after each, and
        the (loglik, is_greedy) of each row's ``targets`` (teacher-forced from the same
        prompt state). Prompts of any length stream with bounded memory."""
        with torch.inference_mode():
            logits, state = self.stream(prompts.to(self.device), last_only=True)
            last = logits[:, -1].to(_score_dtype(logits))
            scored = self._score_after(last, state, targets)
            generated, token = [], last.argmax(-1, keepdim=True)
            for step in range(new_tokens):
                generated.append(token)
                if step + 1 < new_tokens:
                    out = self.model(token, state=state, teach_scale=self.teach_scale)
                    state = out.state
                    token = out.logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat(generated, dim=1).tolist()
        return ids, scored

    def _score_after(self, last: Tensor, state: ModelState, targets: Sequence[Sequence[int]]
                     ) -> list[tuple[float, bool]]:
        """Teacher-forced continuation scores from a shared prompt state (the state is a
        value: feeding it again does not change it)."""
        width = max(len(t) for t in targets)
        x = torch.full((len(targets), width), self.prefix_token, dtype=torch.long)
        for b, t in enumerate(targets):
            x[b, :len(t)] = torch.tensor(t, dtype=torch.long)
        x = x.to(self.device)
        logits = last[:, None]
        if width > 1:
            logits = torch.cat([logits, self.stream(x[:, :-1], state)[0].to(last.dtype)], dim=1)
        results = []
        for b, t in enumerate(targets):
            logp = F.log_softmax(logits[b, :len(t)], dim=-1)
            target = torch.tensor(t, device=logp.device)
            results.append((logp.gather(-1, target[:, None]).sum().item(),
                            bool((logp.argmax(-1) == target).all())))
        return results

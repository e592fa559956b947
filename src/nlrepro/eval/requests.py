"""From request strings to token ids, exactly as lm-eval 0.4's ``TemplateLM`` does it.

A scorer (our model, or an lm-eval adapter) receives ``(context, continuation)`` strings
and needs the token ids to score. The rules that make a score comparable to lm-eval's:

* trailing whitespace of the context moves to the front of the continuation, and the
  continuation's tokens are ``tok(context + continuation)[len(tok(context)):]``, so the
  continuation is tokenised as it would appear in running text (``encode_pair``);
* an empty context is replaced by one prefix token (BOS if the tokenizer has one, else its
  end-of-text token: lm-eval's ``prefix_token_id``);
* a request longer than the model's window keeps its rightmost ``max_len + 1`` tokens
  (``truncate_left``);
* a whole document is scored in disjoint windows (``rolling_windows``).
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

from nlrepro.errors import NLReproError

Encode = Callable[[str], list[int]]


def encode_pair(
    encode: Encode, context: str, continuation: str, prefix_token: int | None = None
) -> tuple[list[int], list[int]]:
    """Context and continuation token ids for one loglikelihood request.

    ``encode`` must add no special tokens. ``prefix_token`` is needed only when ``context``
    is empty (lm-eval then conditions on ``[prefix_token]`` and encodes the continuation
    alone)."""
    if context == "":
        if prefix_token is None:
            raise ValueError("an empty context needs a prefix_token (BOS or end-of-text)")
        return [prefix_token], list(encode(continuation))
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = list(encode(context + continuation))
    context_ids = list(encode(context))
    return context_ids, whole[len(context_ids):]


def truncate_left(
    context_ids: Sequence[int], continuation_ids: Sequence[int], max_len: int
) -> list[int]:
    """The model input for one request: ``(context + continuation)[-(max_len + 1):][:-1]``.

    The last ``len(continuation_ids)`` positions of this input predict the continuation;
    a context too long for the window loses its left end, as in lm-eval's HFLM."""
    if len(continuation_ids) > max_len:
        raise NLReproError(
            f"eval: a continuation of {len(continuation_ids)} tokens does not fit the "
            f"evaluation window of {max_len} tokens (raise eval.max_len)")
    return (list(context_ids) + list(continuation_ids))[-(max_len + 1):][:-1]


def rolling_windows(
    token_ids: Sequence[int], max_len: int, prefix_token: int
) -> Iterator[tuple[list[int], list[int]]]:
    """Disjoint ``(context_ids, target_ids)`` windows covering a document, as lm-eval's
    ``get_rolling_token_windows(..., context_len=1)`` followed by ``make_disjoint_window``.

    Every token is a target exactly once, and ``len(context) + len(target) - 1 <= max_len``
    (the model input is ``(context + target)[:-1]``, scored on its last ``len(target)``
    positions). The first window conditions on ``[prefix_token]`` only and predicts the
    first ``max_len`` tokens; each later window predicts the next ``max_len`` tokens from
    one token of context, except the last, which is topped up with earlier tokens so its
    input is still ``max_len`` long. Windows are independent requests: nothing carries over
    from one to the next (for a memory model: fresh state per window)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    tokens = list(token_ids)
    if not tokens:
        return
    first = min(max_len, len(tokens))
    yield [prefix_token], tokens[:first]
    predicted = first
    while predicted < len(tokens):
        n_pred = min(len(tokens) - predicted, max_len)
        end = predicted + n_pred
        # lm-eval's window input is tokens[end - max_len - 1 : end - 1]; keeping its part
        # before the targets gives the disjoint context.
        window = tokens[end - max_len - 1 : end - 1]  # start >= 0: end > max_len here
        yield window[: len(window) - (n_pred - 1)], tokens[predicted:end]
        predicted = end

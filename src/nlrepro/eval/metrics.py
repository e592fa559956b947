"""Scoring a loaded task with any scorer, and lm-eval 0.4's metrics over the results.

A scorer is two plain callables, so our model and an lm-eval adapter plug in alike:

* ``loglikelihood(requests)``: for each ``(context, continuation)``, the summed
  log-probability of the continuation's tokens after the context, and whether every one of
  them is the greedy (argmax) token. Tokenise with ``requests.encode_pair``.
* ``loglikelihood_rolling(texts)``: the summed log-probability of every token of each text,
  scored in ``requests.rolling_windows``.

``evaluate_task`` sends all of a task's requests in one call (batching is the scorer's
business), then keeps one JSON-ready record per example for auditing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from nlrepro.errors import NLReproError
from nlrepro.eval.tasks import (
    ChoiceExample,
    RollingExample,
    TargetExample,
    TaskData,
)

LogLikelihood = Callable[[list[tuple[str, str]]], list[tuple[float, bool]]]
LogLikelihoodRolling = Callable[[list[str]], list[float]]

# The paper's eight accuracy columns; their mean is the "Avg." column.
HEADLINE_METRICS: dict[str, str] = {
    "lambada_openai": "acc",
    "piqa": "acc",
    "hellaswag": "acc_norm",
    "winogrande": "acc",
    "arc_easy": "acc",
    "arc_challenge": "acc_norm",
    "siqa": "acc",
    "boolq": "acc",
}


@dataclass(frozen=True)
class TaskResult:
    task: str
    metrics: dict[str, float]
    records: list[dict[str, Any]]


def _argmax(scores: Sequence[float]) -> int:
    """First index of the maximum, as ``np.argmax`` (``max`` keeps the first of ties)."""
    return max(range(len(scores)), key=scores.__getitem__)


def _per_char(loglik: float, choice: str) -> float:
    # numpy's ll / 0.0 for an empty choice: -inf for a negative log-likelihood
    return loglik / len(choice) if choice else -math.inf


def choice_record(example: ChoiceExample, results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    """acc = argmax of the summed log-likelihoods; acc_norm = argmax of each divided by its
    choice's length in characters."""
    lls = [float(ll) for ll, _ in results]
    pred = _argmax(lls)
    pred_norm = _argmax([_per_char(ll, c) for ll, c in zip(lls, example.choices)])
    return {
        "doc_id": example.doc_id,
        "prompt": [context for context, _ in example.requests],
        "continuation": [continuation for _, continuation in example.requests],
        "loglik": lls,
        "is_greedy": [bool(greedy) for _, greedy in results],
        "gold": example.gold,
        "pred": pred,
        "pred_norm": pred_norm,
        "acc": float(pred == example.gold),
        "acc_norm": float(pred_norm == example.gold),
    }


def target_record(example: TargetExample, result: tuple[float, bool]) -> dict[str, Any]:
    loglik, greedy = result
    return {
        "doc_id": example.doc_id,
        "prompt": example.context,
        "continuation": example.target,
        "loglik": float(loglik),
        "is_greedy": bool(greedy),
    }


def rolling_record(example: RollingExample, loglik: float) -> dict[str, Any]:
    return {
        "doc_id": example.doc_id,
        "text": example.text,
        "loglik": float(loglik),
        "words": example.words,
        "bytes": example.bytes,
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def choice_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {
        "acc": _mean([r["acc"] for r in records]),
        "acc_norm": _mean([r["acc_norm"] for r in records]),
    }


def target_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """LAMBADA: perplexity = exp(-mean log-likelihood of the target); acc = share of
    targets that are entirely the greedy continuation."""
    return {
        "perplexity": math.exp(-_mean([r["loglik"] for r in records])),
        "acc": _mean([float(r["is_greedy"]) for r in records]),
    }


def rolling_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Corpus-level (lm-eval's ``weighted_perplexity``): total log-likelihood over total
    words or bytes of the raw pages."""
    loglik = sum(r["loglik"] for r in records)
    words = sum(r["words"] for r in records)
    n_bytes = sum(r["bytes"] for r in records)
    return {
        "word_perplexity": math.exp(-loglik / words),
        "byte_perplexity": math.exp(-loglik / n_bytes),
        "bits_per_byte": -loglik / (n_bytes * math.log(2)),
    }


def _checked(results: Sequence[Any], n_requests: int, scorer: str) -> Sequence[Any]:
    if len(results) != n_requests:
        raise ValueError(f"{scorer} returned {len(results)} results for {n_requests} requests")
    return results


def evaluate_task(
    data: TaskData,
    loglikelihood: LogLikelihood | None = None,
    loglikelihood_rolling: LogLikelihoodRolling | None = None,
) -> TaskResult:
    """Score every example of ``data`` and aggregate the metrics lm-eval reports for it."""
    spec = data.spec
    if spec.kind == "loglikelihood_rolling":
        if loglikelihood_rolling is None:
            raise ValueError(f"task {spec.name} needs a loglikelihood_rolling scorer")
        texts = [ex.text for ex in data.examples]
        lls = _checked(loglikelihood_rolling(texts), len(texts), "loglikelihood_rolling")
        records = [rolling_record(ex, ll) for ex, ll in zip(data.examples, lls)]
        metrics = rolling_metrics(records)
    else:
        if loglikelihood is None:
            raise ValueError(f"task {spec.name} needs a loglikelihood scorer")
        requests = [request for ex in data.examples for request in ex.requests]
        results = iter(_checked(loglikelihood(requests), len(requests), "loglikelihood"))
        if spec.kind == "multiple_choice":
            records = [
                choice_record(ex, [next(results) for _ in ex.requests]) for ex in data.examples
            ]
            metrics = choice_metrics(records)
        else:
            records = [target_record(ex, next(results)) for ex in data.examples]
            metrics = target_metrics(records)
    return TaskResult(spec.name, {m: metrics[m] for m in spec.metrics}, records)


def average_accuracy(metrics_by_task: Mapping[str, Mapping[str, float]]) -> float:
    """Mean of the paper's eight accuracy columns (``HEADLINE_METRICS``)."""
    missing = [task for task in HEADLINE_METRICS if task not in metrics_by_task]
    if missing:
        raise NLReproError(f"average accuracy needs all 8 tasks; missing: {', '.join(missing)}")
    return _mean([metrics_by_task[t][m] for t, m in HEADLINE_METRICS.items()])

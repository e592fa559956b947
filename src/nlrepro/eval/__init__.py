"""Zero-shot evaluation as lm-evaluation-harness 0.4 scores it, independent of the model.

    data = load_task("piqa", "data/eval/piqa.jsonl", limit=100)   # or path=None: HF hub
    result = evaluate_task(data, loglikelihood=my_scorer)          # metrics + per-example records
    average_accuracy({task: result.metrics, ...})                  # the paper's "Avg." column

``tasks`` builds the requests, ``requests`` turns them into tokens (for the scorer),
``metrics`` aggregates, ``detokenize`` holds lm-eval's text clean-up rules.
"""
from nlrepro.eval.detokenize import (
    count_bytes,
    count_words,
    hellaswag_preprocess,
    wikitext_detokenize,
)
from nlrepro.eval.metrics import (
    HEADLINE_METRICS,
    LogLikelihood,
    LogLikelihoodRolling,
    TaskResult,
    average_accuracy,
    evaluate_task,
)
from nlrepro.eval.requests import encode_pair, rolling_windows, truncate_left
from nlrepro.eval.tasks import (
    TASKS,
    ChoiceExample,
    RollingExample,
    TargetExample,
    TaskData,
    TaskSpec,
    build_examples,
    get_spec,
    load_docs,
    load_task,
)

__all__ = [
    "HEADLINE_METRICS",
    "TASKS",
    "ChoiceExample",
    "LogLikelihood",
    "LogLikelihoodRolling",
    "RollingExample",
    "TargetExample",
    "TaskData",
    "TaskResult",
    "TaskSpec",
    "average_accuracy",
    "build_examples",
    "count_bytes",
    "count_words",
    "encode_pair",
    "evaluate_task",
    "get_spec",
    "hellaswag_preprocess",
    "load_docs",
    "load_task",
    "rolling_windows",
    "truncate_left",
    "wikitext_detokenize",
]

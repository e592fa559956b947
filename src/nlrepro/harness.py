"""Our checkpoints as an lm-evaluation-harness model: ``NLReproLM``, registered as "nlrepro".

Install the optional extra (lm-eval is never needed to import ``nlrepro``; only this
module imports it)::

    pip install -r requirements-lmeval.txt      # lm-eval==0.4.13, torch stays as pinned
    pip install --no-deps -e .                  # optional: the nlrepro-lm-eval command

Run any harness task on a checkpoint::

    nlrepro-lm-eval --model nlrepro --model_args checkpoint=models/hope-s0.pt --tasks arc_easy
    python -m nlrepro.harness --model nlrepro --model_args checkpoint=models/hope-s0.pt ...

Both are lm-eval's own CLI (``lm_eval.__main__.cli_evaluate``, every option as documented
there) with this module imported first. lm-eval 0.4.13 has no plugin discovery: its plain
``lm_eval`` command resolves ``--model`` against a registry that only lm-eval's own modules
fill, so a model from another package exists only in a process that imported it (see
docs/LM_EVAL.md). pyproject.toml also declares the ``lm_eval.models`` entry point that
later lm-eval releases read, so there ``lm_eval --model nlrepro`` works as it is. From
Python: ``import nlrepro.harness`` and then ``lm_eval.simple_evaluate(model="nlrepro",
model_args={"checkpoint": ...}, ...)``.

Model args (``--model_args key=value,...``):

* ``checkpoint`` (required): a training checkpoint, ``models/<variant>-s<seed>.pt``; the variant
  and the model config come from it, and the weights load strictly.
* ``tokenizer``: default ``data/tokenizer/tokenizer.json`` (relative to the current
  directory); it must be the one the checkpoint was trained with (checked by hash).
* ``teach_scale``: scale of the in-context updates; default the checkpoint's own.
* ``max_len``: tokens per request window; default the training context, ``row_len - 1``.
* ``batch_size``: requests per forward call; default lm-eval's ``--batch_size`` (1).
* ``stream_chunk``: tokens per forward call of a longer input, state carried (256).
* ``device``: ``cpu``/``cuda``/``cuda:N``; default cuda if available, else cpu. lm-eval's
  ``--device`` (which defaults to ``cuda:0``) is used when it names an available device.
* ``dtype``: ``float32``, ``float64``, ``bfloat16`` or ``float16``; default the
  checkpoint's (float32). Log-softmax always runs in at least float32.
* ``max_gen_toks``: generation length when a task sets none (256, as lm-eval's HF model).

A key given in ``--model_args`` wins over lm-eval's ``--batch_size`` and ``--device``.

Semantics: exactly those of our evaluate stage (docs/EVAL_STAGE.md), because the scoring
is ``ModelScorer``'s, the code the stage runs:

* every request starts from a fresh memory state (fast weights equal to the slow ones);
  the in-context updates run causally over the request's own tokens only, at the
  checkpoint's teach scale (or ``teach_scale``); nothing carries over between requests;
* ``loglikelihood`` tokenises as lm-eval's ``TemplateLM`` (``requests.encode_pair``):
  trailing context whitespace moves into the continuation, an empty context is the
  end-of-text token (lm-eval's ``prefix_token_id``: our tokenizer has no BOS), and an input
  longer than ``max_len`` loses its left end;
* ``loglikelihood_rolling`` scores disjoint ``max_len`` windows, each from a fresh state;
* ``generate_until`` decodes greedily, one request at a time from a fresh state: the
  context keeps its last ``max_len`` tokens, then up to ``max_gen_toks`` tokens follow with
  the state carried; it stops at the first ``until`` string or at ``<|endoftext|>`` and
  returns the text before it. Sampling (``do_sample``, ``temperature > 0``) is refused.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from nlrepro.data.tokenizer import EOS
from nlrepro.errors import NLReproError
from nlrepro.eval.runner import load_checkpoint_model
from nlrepro.eval.scorer import ModelScorer

try:
    import lm_eval.models  # noqa: F401  (fills the registry with lm-eval's own models first)
    from lm_eval.api.model import LM
    from lm_eval.api.registry import model_registry
    from lm_eval.utils import simple_parse_args_string
    from tqdm import tqdm  # an lm-eval dependency
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        f"nlrepro.harness needs lm-evaluation-harness ({exc}); install the optional "
        "extra: pip install -r requirements-lmeval.txt") from exc

log = logging.getLogger(__name__)

NAME = "nlrepro"
DEFAULT_TOKENIZER = "data/tokenizer/tokenizer.json"
DEFAULT_STREAM_CHUNK = 256
DEFAULT_MAX_GEN_TOKS = 256
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}
# Generation options that do not change greedy decoding.
_GREEDY_NEUTRAL = {"until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k",
                   "num_beams", "num_return_sequences"}


def _positive_int(key: str, value: Any) -> int:
    try:
        number = int(value)
        ok = number >= 1 and float(value) == number
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise NLReproError(f"nlrepro model_args: {key}={value!r} is not a positive integer")
    return number


def _device(value: Any) -> torch.device:
    if value is None or value == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(value))
    except (RuntimeError, ValueError):
        raise NLReproError(f"nlrepro model_args: device={value!r} is not a torch device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NLReproError(f"nlrepro model_args: device={value!r} but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise NLReproError(f"nlrepro model_args: device={value!r} but only "
                               f"{torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type != "cpu":
        raise NLReproError(f"nlrepro model_args: device={value!r} (expected cpu, cuda or cuda:N)")
    return device


def _cli_device(value: Any) -> Optional[str]:
    """lm-eval's ``--device`` (default ``cuda:0`` even on a machine without CUDA): used when
    it names an available device, otherwise the automatic choice, as lm-eval's HF model."""
    if value is None:
        return None
    try:
        return str(_device(value))
    except NLReproError:
        log.info("nlrepro: --device %s is not available here; choosing automatically", value)
        return None


class NLReproLM(LM):
    """A ``NestedLM`` training checkpoint (HOPE, TITAN or Transformer++) scored by our
    ``ModelScorer``; see the module docstring for the arguments and the semantics."""

    def __init__(self, checkpoint: Any = None, tokenizer: Any = DEFAULT_TOKENIZER,
                 teach_scale: Any = None, max_len: Any = None, batch_size: Any = 1,
                 stream_chunk: Any = DEFAULT_STREAM_CHUNK, device: Any = None,
                 dtype: Any = None, max_gen_toks: Any = DEFAULT_MAX_GEN_TOKS, **unknown: Any):
        super().__init__()
        known = ("checkpoint, tokenizer, teach_scale, max_len, batch_size, stream_chunk, "
                 "device, dtype, max_gen_toks")
        if unknown:
            raise NLReproError(f"nlrepro model_args: unknown key(s) {', '.join(sorted(unknown))} "
                               f"(known: {known})")
        if checkpoint in (None, ""):
            raise NLReproError("nlrepro model_args: checkpoint=<path to models/<variant>-s<seed>.pt> "
                               "is required")
        ckpt_path, tok_path = Path(str(checkpoint)), Path(str(tokenizer))
        loaded = load_checkpoint_model(ckpt_path, tok_path)  # whichever variant it holds
        variant, row_len = loaded.run.variant, loaded.run.data.row_len

        self._device = _device(device)
        model = loaded.model
        if dtype not in (None, "", "auto"):
            if str(dtype) not in DTYPES:
                raise NLReproError(f"nlrepro model_args: dtype={dtype!r} (expected one of "
                                   f"{', '.join(DTYPES)})")
            model = model.to(DTYPES[str(dtype)])
        model = model.to(self._device).eval()

        if teach_scale in (None, ""):
            scale = float(loaded.teach_scale)
        else:
            try:
                scale = float(teach_scale)
            except (TypeError, ValueError):
                raise NLReproError(f"nlrepro model_args: teach_scale={teach_scale!r} is not a "
                                   "number") from None
        window = row_len - 1 if max_len in (None, "") else _positive_int("max_len", max_len)
        if batch_size in (None, "") or str(batch_size).startswith("auto"):
            batch = 16  # no automatic batch-size search: the evaluate stage's default
        else:
            batch = _positive_int("batch_size", batch_size)
        self.max_gen_toks = _positive_int("max_gen_toks", max_gen_toks)
        self.scorer = ModelScorer(model, loaded.tokenizer, scale, window, batch,
                                  _positive_int("stream_chunk", stream_chunk))
        self.info = {
            "nlrepro_checkpoint": str(ckpt_path),
            "nlrepro_checkpoint_sha256": loaded.checkpoint_sha256,
            "nlrepro_tokenizer_sha256": loaded.tokenizer_sha256,
            "nlrepro_variant": variant,
            "nlrepro_step": loaded.step,
            "nlrepro_teach_scale": scale,
            "nlrepro_max_len": window,
            "nlrepro_stream_chunk": self.scorer.stream_chunk,
            "nlrepro_batch_size": batch,
            "nlrepro_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "nlrepro_device": str(self._device),
        }

    # --- construction from lm-eval's CLI / simple_evaluate ------------------------

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any],
                            additional_config: Optional[dict[str, Any]] = None) -> "NLReproLM":
        """``model_args`` plus lm-eval's ``--batch_size``/``--device``; a key given in
        ``model_args`` wins, and ``max_batch_size`` (auto batching) does not apply."""
        args = dict(arg_dict or {})
        args.pop("trust_remote_code", None)  # lm-eval's --trust_remote_code: nothing remote here
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if "batch_size" not in args and "batch_size" in extra:
            args["batch_size"] = extra["batch_size"]
        if "device" not in args and "device" in extra:
            args["device"] = _cli_device(extra["device"])
        return cls(**args)

    @classmethod
    def create_from_arg_string(cls, arg_string: str,
                               additional_config: Optional[dict[str, Any]] = None) -> "NLReproLM":
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # --- what lm-eval reads -------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        return f"nlrepro-{self.info['nlrepro_tokenizer_sha256'][:16]}"

    def get_model_info(self) -> dict[str, Any]:
        """Lineage that lm-eval writes into its results' config section."""
        return dict(self.info)

    # --- the three request types --------------------------------------------------

    def _scored(self, fn, items, desc: str, disable: bool, total: Optional[int]):
        """``fn(items)`` with a progress bar fed by the scorer's per-batch callback."""
        with tqdm(total=total, desc=desc, disable=disable or self.rank != 0) as bar:
            self.scorer.on_batch = bar.update
            try:
                return fn(items)
            finally:
                self.scorer.on_batch = None

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(req.args) for req in requests]
        results = self._scored(self.scorer.loglikelihood, pairs, "nlrepro loglikelihood",
                               disable_tqdm, len(pairs))
        return [(float(ll), bool(greedy)) for ll, greedy in results]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [req.args[0] for req in requests]
        results = self._scored(self.scorer.loglikelihood_rolling, texts,
                               "nlrepro rolling windows", disable_tqdm, None)
        return [float(ll) for ll in results]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return [self._generate(*req.args) for req in
                tqdm(requests, desc="nlrepro generate_until", disable=disable_tqdm)]

    def _generate(self, context: str, gen_kwargs: Optional[dict[str, Any]] = None) -> str:
        kwargs = dict(gen_kwargs or {})
        if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0.0:
            raise NLReproError(f"nlrepro: only greedy generation is implemented (got {kwargs})")
        ignored = sorted(set(kwargs) - _GREEDY_NEUTRAL)
        if ignored:
            log.warning("nlrepro: generation options %s are ignored (greedy decoding)", ignored)
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        stops = [s for s in until if s] + [EOS]
        max_new = _positive_int("max_gen_toks", kwargs.get("max_gen_toks", self.max_gen_toks))

        scorer = self.scorer
        ids = scorer.encode(context)[-scorer.max_len:] or [scorer.prefix_token]
        generated: list[int] = []
        with torch.inference_mode():
            logits, state = scorer.stream(torch.tensor([ids], device=scorer.device),
                                          last_only=True)
            for _ in range(max_new):
                token = int(logits[0, -1].argmax())
                generated.append(token)
                text = scorer.decode(generated)
                if any(stop in text for stop in stops):
                    break
                logits, state = scorer.stream(torch.tensor([[token]], device=scorer.device),
                                              state, last_only=True)
        text = scorer.decode(generated)
        for stop in stops:
            text = text.split(stop)[0]
        return text


if NAME not in model_registry:
    # A lazy "module:Class" target (lm-eval's documented lazy registration): the same entry
    # whether this module was imported or run as ``python -m``.
    model_registry.register(NAME, target="nlrepro.harness:NLReproLM")


def main(argv: Optional[list[str]] = None) -> None:
    """``nlrepro-lm-eval``: lm-eval's own CLI with the "nlrepro" model registered; a bad
    model argument or checkpoint is one ``error:`` line and exit status 2."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
        cli_evaluate()
    except NLReproError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

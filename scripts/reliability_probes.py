"""Feed the stages bad input, one probe at a time, and print what each said.

    PYTHONPATH=src python scripts/reliability_probes.py [--md] [PROBE ...]

Every probe runs a real stage command (or the gate) as a subprocess in a scratch
directory holding a small params.yaml and the files the probe needs, and records the exit
status and the first line of stderr. A probe passes when the command exits non-zero with
one `error:` line that contains the expected text and leaves no output file behind
(docs/RELIABILITY.md holds the table this prints; the fault-injection probes, kill -9 of
running stages, are tests: tests/test_faults.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parent.parent
SMALL = {"data": {"sources": {"mine": {"type": "local", "paths": ["corpus/*.jsonl"]}},
                  "tokenize": {"row_len": 65}},
         "train": {"variants": ["hope"]}}
DOC = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 4


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def base_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["sources"] = {}
    return deep_merge(params, SMALL)


@dataclass
class Probe:
    name: str                       # what is wrong
    command: list[str]              # run in the scratch directory
    expect: str                     # text the one error line must contain
    params: dict = field(default_factory=dict)      # merged over base_params()
    raw_params: str | None = None   # written verbatim instead
    files: dict[str, bytes | str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    outputs: tuple[str, ...] = ()   # must not exist afterwards


CHECK = ["python", "-m", "stages.check"]
NAN, INF = float("nan"), float("inf")


def local(name: str, body: bytes | str, fmt: str = "jsonl", text_field: str = "text") -> dict:
    return {"data": {"sources": {"mine": {"type": "local", "paths": [f"corpus/{name}"],
                                          "format": fmt, "text_field": text_field}}}}


def write_checkpoint(root: Path, seed: int = 0, truncate: bool = False) -> None:
    code = ("import sys, torch; sys.path.insert(0, %r); from nlrepro.train import checkpoint "
            "as c; c.write_torch('models/hope-s0.pt', {'format': c.FORMAT, 'model': {}, "
            "'optimizer': None, 'config': {'variant': 'hope', 'seed': %d}, 'config_hash': ''})"
            % (str(REPO / "src"), seed))
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
    if truncate:
        p = root / "models/hope-s0.pt"
        p.write_bytes(p.read_bytes()[:100])


def hold_lock(root: Path) -> None:
    code = ("import sys, time; sys.path.insert(0, %r); from pathlib import Path; from "
            "nlrepro.train.guardrails import RunLock\nwith RunLock(Path('run'), 'hope-s0'):\n"
            "    print('held', flush=True); time.sleep(30)" % str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE,
                            text=True)
    proc.stdout.readline()


def git_dvc_repo(root: Path) -> None:
    dvc = str(Path(sys.executable).parent / "dvc")
    (root / "dvc.yaml").write_text("metrics:\n- metrics/summary.json\n")
    (root / "metrics").mkdir()
    (root / "metrics/summary.json").write_text('{"hope": {"val_loss": {"mean": 5.0}}}')
    git = ["git", "-c", "user.email=p@p", "-c", "user.name=p"]
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], git + ["add", "-A"],
                git + ["commit", "-qm", "probe"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)


PROBES = [
    # --- params.yaml, checked by the first stage on every dvc repro -----------------------
    Probe("misspelled top-level key", CHECK, "tech_scale: unknown key (did you mean 'teach_scale'?",
          {"tech_scale": 0.1}),
    Probe("misspelled section", CHECK, "data.filtr: unknown key (did you mean 'filter'?",
          {"data": {"filtr": {}}}),
    Probe("misspelled nested key", CHECK, "data.tokenizer.vocab: unknown key (did you mean "
          "'vocab_size'?", {"data": {"tokenizer": {"vocab": 512}}}),
    Probe("teach_scale NaN", CHECK, "teach_scale: must be a finite number, got nan",
          {"teach_scale": NAN}),
    Probe("teach_scale infinite", CHECK, "teach_scale: must be a finite number, got inf",
          {"teach_scale": INF}),
    Probe("train.lr NaN", CHECK, "train.lr: must be a finite number", {"train": {"lr": NAN}}),
    Probe("clip.grad_norm NaN", CHECK, "clip.grad_norm: must be a finite number",
          {"clip": {"grad_norm": NAN}}),
    Probe("data.split.val_frac NaN", CHECK, "data.split.val_frac: must be a finite number",
          {"data": {"split": {"val_frac": NAN}}}),
    Probe("eval.teach_scale NaN", CHECK, "eval.teach_scale: must be a finite number",
          {"eval": {"teach_scale": NAN}}),
    Probe("data.filter.min_alpha_frac NaN", CHECK, "data.filter.min_alpha_frac: must be a "
          "finite number", {"data": {"filter": {"min_alpha_frac": NAN}}}),
    Probe("teach.levels value NaN", CHECK, "teach.levels.memory: must be a finite number",
          {"teach": {"levels": {"memory": NAN}}}),
    Probe("model override NaN", CHECK, "must be a finite number", {"model": {"memory": {
          "step_init": NAN}}}),
    Probe("negative teach_scale", CHECK, "teach_scale: must be in [0.0, inf], got -1",
          {"teach_scale": -1}),
    Probe("float written as a string", CHECK, "train.lr: expected a number, got '3e-4' (write "
          "floats like 3.0e-4)", {"train": {"lr": "3e-4"}}),
    Probe("row_len 2 (evaluation window 1 token)", CHECK, "data.tokenize.row_len: the "
          "evaluation window", {"data": {"tokenize": {"row_len": 2}}}),
    Probe("passkey length 10,000,000", CHECK, "eval.passkey.lengths[0]: must be in [16, 131072]",
          {"eval": {"passkey": {"lengths": [10_000_000]}}}),
    Probe("icl bucket longer than the sequence", CHECK, "eval.icl.bucket: 2048 is longer than "
          "the sequence", {"eval": {"icl": {"bucket": 2048}}}),
    Probe("unknown variant", CHECK, "train.variants[0]: must be one of",
          {"train": {"variants": ["mamba"]}}),
    Probe("no training seed", CHECK, "train.seeds: at least one seed is required",
          {"train": {"seeds": []}}),
    Probe("a seed twice", CHECK, "train.seeds: each seed at most once",
          {"train": {"seeds": [0, 0]}}),
    Probe("negative seed", CHECK, "train.seeds[0]: must be in [0, 2147483647], got -1",
          {"train": {"seeds": [-1]}}),
    Probe("YAML syntax error", CHECK, "params.yaml: not valid YAML (line ",
          raw_params="seed: 0\nteach_scale: [1.0\n"),
    Probe("params.yaml missing", CHECK, "params.yaml: params file not found", raw_params=""),
    Probe("model.type set by hand", CHECK, "model.type: set by train.variants",
          {"model": {"type": "hope"}}),
    Probe("per-variant override of an unknown variant", CHECK, "model.variants.mamba: unknown "
          "variant", {"model": {"variants": {"mamba": {}}}}),
    Probe("teach level the model lacks", CHECK, "teach.levels.cms7: the hope model has 3 CMS "
          "levels", {"teach": {"levels": {"cms7": 1.0}}}),
    Probe("unknown source type", CHECK, "data.sources.x.type: unknown type 'ftp'",
          {"data": {"sources": {"x": {"type": "ftp"}}}}),
    Probe("val_frac + test_frac >= 1", CHECK, "data.split: val_frac + test_frac must be < 1",
          {"data": {"split": {"val_frac": 0.5, "test_frac": 0.5}}}),
    Probe("batch not divisible by ranks", CHECK, "train.batch_size: 8 does not split over "
          "nproc=3 ranks", {"train": {"nproc": 3}}),
    Probe("FSDP on one process", CHECK, "train.fsdp: needs nproc > 1", {"train": {"fsdp": True}}),
    Probe("vocabulary below the byte alphabet", CHECK, "data.tokenizer.vocab_size: must be in "
          "[264, 65536], got 10", {"data": {"tokenizer": {"vocab_size": 10}}}),
    Probe("gate rule with a bad direction", CHECK, "gate.rules.val_loss.better: must be one of",
          {"gate": {"rules": {"val_loss": {"better": "smaller"}}}}),
    # --- files params name ----------------------------------------------------------------
    Probe("local source glob matches nothing", CHECK, "local source: no file matches "
          "'corpus/*.jsonl'", outputs=("data/inputs",)),
    Probe("eval task file missing", CHECK, "eval.tasks.piqa: file not found: piqa.jsonl",
          {"eval": {"tasks": {"piqa": "piqa.jsonl"}}}, files={"corpus/a.jsonl": "{}\n"},
          outputs=("data/inputs",)),
    Probe("unknown zero-shot task", CHECK, "eval.tasks.mmlu: unknown task",
          {"eval": {"tasks": {"mmlu": None}}}),
    Probe("malformed JSONL line", ["python", "-m", "stages.ingest", "mine"], "corpus/bad.jsonl",
          local("bad.jsonl", ""), files={"corpus/bad.jsonl": '{"text": "a"}\n{oops\n'},
          outputs=("data/raw/mine.parquet",)),
    Probe("JSONL without the text field", ["python", "-m", "stages.ingest", "mine"], "text",
          local("nofield.jsonl", ""), files={"corpus/nofield.jsonl": '{"body": "a"}\n'},
          outputs=("data/raw/mine.parquet",)),
    Probe("non-UTF-8 text file", ["python", "-m", "stages.ingest", "mine"], "corpus/latin1.txt",
          local("latin1.txt", "", fmt="txt"), files={"corpus/latin1.txt": "caf\xe9".encode("latin-1")},
          outputs=("data/raw/mine.parquet",)),
    Probe("corrupt parquet", ["python", "-m", "stages.ingest", "mine"], "corpus/bad.parquet",
          local("bad.parquet", "", fmt="parquet"), files={"corpus/bad.parquet": b"PAR1garbage"},
          outputs=("data/raw/mine.parquet",)),
    # --- stages with missing or wrong inputs ------------------------------------------------
    Probe("train: unknown variant on the command line", ["python", "-m", "stages.train", "gpt"],
          "train: unknown variant 'gpt'"),
    Probe("train: negative --seed", ["python", "-m", "stages.train", "hope", "--seed", "-1"],
          "train: --seed must be >= 0"),
    Probe("train: 1.3b preset that cannot fit in memory", ["python", "-m", "stages.train", "hope"],
          "GiB are available", {"model": {"preset": "1.3b"}, "data": {"tokenize": {"row_len": 257}}}),
    Probe("evaluate: no checkpoint", ["python", "-m", "stages.evaluate", "hope"],
          "models/hope-s0.pt: checkpoint not found", outputs=("metrics/eval/hope-s0.json",)),
    Probe("evaluate: checkpoint of another seed", ["python", "-m", "stages.evaluate", "hope"],
          "models/hope-s0.pt: was trained with seed 3, not 0",
          setup=lambda root: write_checkpoint(root, seed=3), outputs=("metrics/eval/hope-s0.json",)),
    Probe("evaluate: truncated checkpoint", ["python", "-m", "stages.evaluate", "hope"],
          "models/hope-s0.pt: unreadable checkpoint",
          setup=lambda root: write_checkpoint(root, truncate=True),
          outputs=("metrics/eval/hope-s0.json",)),
    Probe("report: a run's results missing", ["python", "-m", "stages.report"],
          "metrics/train/hope-s0/metrics.json: not found (run `dvc repro train@hope-0` first)",
          outputs=("metrics/summary.json", "metrics/report.md")),
    Probe("second trainer on a locked run", ["python", "-c", "import sys; sys.path.insert(0, "
          f"{str(REPO / 'src')!r}); from pathlib import Path; from nlrepro.errors import "
          "cli_main; from nlrepro.train.guardrails import RunLock\n@cli_main\ndef main():\n"
          "    RunLock(Path('run'), 'hope-s0').__enter__()\nmain()"],
          "train hope-s0: another trainer (PID", setup=hold_lock),
    Probe("gate against an unknown revision", ["python", "-m", "nlrepro.report.gate",
          "--baseline", "nope"], "gate: dvc metrics diff nope: unknown Git revision 'nope'",
          setup=git_dvc_repo),
]


def run_probe(probe: Probe) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if probe.raw_params is None:
            params = deep_merge(base_params(), probe.params)
            (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        elif probe.raw_params:
            (root / "params.yaml").write_text(probe.raw_params)
        for rel, body in probe.files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(body if isinstance(body, bytes) else body.encode())
        if probe.setup:
            probe.setup(root)
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
        cmd = [sys.executable if c == "python" else c for c in probe.command]
        start = time.monotonic()
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith("WARNING")]
        errors = [l for l in lines if l.startswith("error:")]
        left = [o for o in probe.outputs if (root / o).exists()]
        ok = (r.returncode != 0 and len(errors) == 1 and probe.expect in errors[0]
              and "Traceback" not in r.stderr and not left)
        shown = (["python", "-c", "'<RunLock held by another process>'"]
                 if probe.command[1:2] == ["-c"] else probe.command)
        return {"name": probe.name, "command": " ".join(shown), "rc": r.returncode,
                "line": errors[0] if errors else (lines[-1] if lines else ""), "ok": ok,
                "left": left, "seconds": time.monotonic() - start}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--md", action="store_true")
    ap.add_argument("names", nargs="*", help="run only probes whose name contains one of these")
    args = ap.parse_args()
    probes = [p for p in PROBES if not args.names or any(n in p.name for n in args.names)]
    results = [run_probe(p) for p in probes]
    for i, r in enumerate(results, 1):
        line = r["line"].replace("|", "\\|")
        if args.md:
            print(f"| {i} | {r['name']} | `{r['command']}` | {r['rc']} | {line} | "
                  f"{'yes' if r['ok'] else 'NO'} |")
        else:
            print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['name']}: rc {r['rc']}: {r['line']}"
                  + (f" (left behind: {', '.join(r['left'])})" if r["left"] else ""))
    bad = [r["name"] for r in results if not r["ok"]]
    print(f"{len(results) - len(bad)}/{len(results)} probes gave one clear line and left "
          f"nothing behind" + (f"; wanting: {', '.join(bad)}" if bad else ""), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run logging on rank 0: a durable JSON-lines log plus DVCLive metrics and plots.

The JSON-lines log lives beside the resumable checkpoint (outside DVC's outputs, which
DVC deletes before rerunning a stage) and is flushed at every line, so a crash loses
nothing. On resume it is cut back to the checkpoint's step and replayed into a fresh
DVCLive directory, so the curves of a resumed run equal those of an uninterrupted one.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from dvclive import Live


def _clean(metrics: dict) -> dict:
    return {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in metrics.items()}


class RunLogger:
    """``log_train``/``log_val`` per step, ``progress`` line, ``finish`` with the summary."""

    def __init__(self, name: str, out_dir: Path, log_path: Path, resume_step: int | None):
        self.name, self.out_dir, self.log_path = name, Path(out_dir), Path(log_path)
        entries = []
        if resume_step is not None and self.log_path.exists():
            entries = [json.loads(line) for line in self.log_path.read_text().splitlines()
                       if line.strip()]
            entries = [e for e in entries if e["step"] <= resume_step]
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("".join(json.dumps(e) + "\n" for e in entries))
        self.live = Live(str(self.out_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        for e in entries:
            self._to_live(e)
        self._file = open(self.log_path, "a", encoding="utf-8")

    def _to_live(self, entry: dict) -> None:
        self.live.step = entry["step"]
        for key, value in entry["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.live.log_metric(f"{entry['kind']}/{key}", value)

    def _write(self, kind: str, step: int, metrics: dict) -> None:
        entry = {"kind": kind, "step": step, "metrics": _clean(metrics)}
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        self._to_live(entry)

    def log_train(self, step: int, metrics: dict) -> None:
        self._write("train", step, metrics)

    def log_val(self, step: int, metrics: dict) -> None:
        self._write("val", step, metrics)

    def progress(self, step: int, total: int, m: dict, eta: float) -> None:
        print(f"train {self.name}: step {step}/{total} loss {m['loss']:.4f} "
              f"lr {m['lr']:.2e} teach {m['teach_scale']:.3g} "
              f"{m.get('tokens_per_s', 0):,.0f} tok/s skipped {m.get('skipped_total', 0)} "
              f"ETA {eta:.0f}s", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        print(f"train {self.name}: {text}", file=sys.stderr, flush=True)

    def finish(self, summary: dict) -> None:
        self.live.summary.update(_clean(summary))
        self.live.make_summary()
        self._file.close()
        shutil.copy2(self.log_path, self.out_dir / "log.jsonl")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

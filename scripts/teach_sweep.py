"""The teach-scale stability study as DVC experiments.

Queues one `train@<variant>` experiment per teach scale, with the stability guards on
(params as committed) and, with --guards-off, again with teach_clip, clip.residual and
clip.inner off; runs the queue; prints a markdown table of final val loss, skipped steps,
largest in-context update norm and whether any non-finite value appeared.

    PYTHONPATH=src python scripts/teach_sweep.py --scales 0.05 0.1 0.2 0.5 1.0 --guards-off

Commit your work first: queued experiments see only what git tracks.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

GUARDS_OFF = ["teach_clip=null", "clip.residual=null", "clip.inner=null"]


def dvc(*args: str) -> str:
    result = subprocess.run(["dvc", *args], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        sys.exit(f"error: dvc {' '.join(args)} failed: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout


def queue(variant: str, scales: list[float], guards_off: bool, prefix: str,
          extra: list[str]) -> list[str]:
    names = []
    for guards in ([True, False] if guards_off else [True]):
        for scale in scales:
            name = f"{prefix}-{variant}-ts{scale:g}-{'guards' if guards else 'noguards'}"
            sets = [f"teach_scale={scale}"] + ([] if guards else GUARDS_OFF) + extra
            args = ["exp", "run", "--queue", "-n", name, f"train@{variant}"]
            for s in sets:
                args += ["-S", s]
            dvc(*args)
            names.append(name)
    return names


def wait_for_queue(jobs: int, poll: float = 10.0) -> None:
    # `dvc queue start` keeps stdout open while workers run (DVC.md item 13): detach it.
    subprocess.Popen(["dvc", "queue", "start", "-j", str(jobs)], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    while True:
        time.sleep(poll)
        status = dvc("queue", "status")
        if "Queued" not in status and "Running" not in status:
            return


def table(variant: str, names: list[str]) -> str:
    rows = json.loads(dvc("exp", "show", "--json", "--all-commits"))
    found = {}
    for entry in rows:
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs", []):
                name = rev.get("name")
                if name in names:
                    data = rev.get("data") or {}
                    found[name] = (data, rev.get("error"))
    lines = ["| teach_scale | guards | val loss | skipped steps | max update norm | non-finite |",
             "|---|---|---|---|---|---|"]
    for name in names:
        scale = name.split("-ts")[1].split("-")[0]
        guards = "on" if name.endswith("-guards") else "off"
        data, error = found.get(name, ({}, "missing"))
        metrics = (data.get("metrics") or {}).get(f"metrics/train/{variant}/metrics.json", {})
        m = metrics.get("data") or {}
        if error or not m:
            lines.append(f"| {scale} | {guards} | failed: {error or 'no metrics'} | | | |")
            continue
        lines.append(f"| {scale} | {guards} | {m['val']['loss']:.4f} | {m['skipped_steps']:.0f} | "
                     f"{m['max_update_norm']:.4g} | {'yes' if m['nonfinite_seen'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="hope")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5, 1.0])
    ap.add_argument("--guards-off", action="store_true", help="also run with the guards off")
    ap.add_argument("--prefix", default="sweep")
    ap.add_argument("--jobs", type=int, default=1, help="experiments run at once")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra params override for every run (repeatable)")
    args = ap.parse_args()
    names = queue(args.variant, args.scales, args.guards_off, args.prefix, args.set)
    wait_for_queue(args.jobs)
    print(table(args.variant, names))


if __name__ == "__main__":
    main()

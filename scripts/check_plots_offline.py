"""Check that `dvc plots show` gives a page that draws its charts with no network.

Renders the plots into a directory, fails if the HTML would load anything from another
host, then opens it in headless Chromium with every network request blocked (a dead proxy
and a resolver that finds no host), screenshots it and counts the charts that Vega drew
(<svg class="marks"> or <canvas> after the page's virtual time has run).

    PYTHONPATH=src python scripts/check_plots_offline.py [--out DIR] [TARGET ...]

Exits 0 and prints the screenshot path when every vega plot was drawn; otherwise prints
one `error: ...` line and exits 1. Needs Chromium (Debian: `apt-get install chromium`).
See docs/PLOTS_OFFLINE.md.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nlrepro.report.offline_html import remote_refs

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--mute-audio",
    # No network at all: nothing can hide a remote dependency behind a live connection.
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
OWN_FILES = {"index.html", "static", "screenshot.png", "dom.html"}
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.IGNORECASE | re.DOTALL)


def fail(msg: str) -> None:
    print(f"error: {' '.join(msg.split())}", file=sys.stderr)
    raise SystemExit(1)


def find_browser(explicit: str | None) -> str:
    if explicit:
        path = shutil.which(explicit)
        if not path:
            fail(f"check_plots_offline: browser '{explicit}' not found")
        return path
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    fail("check_plots_offline: Chromium not found (apt-get install -y chromium, "
         "or pass --browser PATH)")
    raise AssertionError  # unreachable


def expected_charts(html: str) -> tuple[int, int]:
    """(vega plots, image plots) that dvc_render put in the page."""
    vega = len(re.findall(r"vegaEmbed\('#", html))
    images = len(re.findall(r"<img\b", _SCRIPT.sub("", html), re.IGNORECASE))
    return vega, images


def drawn_charts(dom: str) -> int:
    """Charts that Vega drew in the rendered DOM (script text removed first)."""
    body = _SCRIPT.sub("", dom)
    svgs = len(re.findall(r"<svg\b[^>]*\bclass=\"marks\"", body, re.IGNORECASE))
    canvases = len(re.findall(r"<canvas\b", body, re.IGNORECASE))
    return svgs + canvases


def run_browser(browser: str, args: list[str], url: str, timeout: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            fail(f"check_plots_offline: {Path(browser).name} did not finish in {timeout} s")
    raise AssertionError  # unreachable


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python scripts/check_plots_offline.py",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help="plot targets passed to `dvc plots show`")
    ap.add_argument("--out", type=Path,
                    default=Path(tempfile.gettempdir()) / "nlrepro_plots_check",
                    help="directory for index.html and screenshot.png (default: %(default)s)")
    ap.add_argument("--browser", help="Chromium executable (default: first of "
                    f"{', '.join(BROWSERS)} on PATH)")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=0,
                    help="screenshot height in px (default: grows with the number of plots)")
    ap.add_argument("--budget-ms", type=int, default=15000,
                    help="virtual time the page gets to draw (default: %(default)s)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per browser run")
    args = ap.parse_args(argv)

    browser = find_browser(args.browser or os.environ.get("CHROMIUM"))
    out = args.out.resolve()
    if out.exists():  # clear an earlier run's output, and nothing else
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_FILES)
        if foreign:
            fail(f"check_plots_offline: {out} holds other files ({foreign[0]}, ...); "
                 "pick another --out")
        shutil.rmtree(out)
    res = subprocess.run(["dvc", "plots", "show", "-o", str(out), *args.targets],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    index = out / "index.html"
    if res.returncode != 0 or not index.is_file():
        last = (res.stderr.strip().splitlines() or ["no index.html written"])[-1]
        fail(f"check_plots_offline: dvc plots show failed: {last}")
    html = index.read_text(encoding="utf-8")
    remote = remote_refs(html)
    if remote:
        fail(f"check_plots_offline: {index} loads {len(remote)} remote URL(s), e.g. "
             f"{remote[0]} (is plots.html_template set? see docs/PLOTS_OFFLINE.md)")
    vega, images = expected_charts(html)
    if vega + images == 0:
        fail(f"check_plots_offline: {index} contains no plots")

    url = index.as_uri()
    shot = out / "screenshot.png"
    # DVC's vega plots are ~480 px wide and ~400 px tall with their legend and slider;
    # an image plot is a framed full-width row, as tall as the image (~650 px for ours).
    rows = math.ceil(vega / max(1, args.width // 480))
    height = args.height or min(16000, 200 + 400 * rows + 650 * images)
    budget = f"--virtual-time-budget={args.budget_ms}"
    res = run_browser(browser, [budget, f"--window-size={args.width},{height}",
                                f"--screenshot={shot}"], url, args.timeout)
    if res.returncode != 0 or not shot.is_file():
        last = (res.stderr.strip().splitlines() or ["no screenshot written"])[-1]
        fail(f"check_plots_offline: screenshot failed: {last}")
    res = run_browser(browser, [budget, "--dump-dom"], url, args.timeout)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["--dump-dom failed"])[-1]
        fail(f"check_plots_offline: --dump-dom failed: {last}")
    (out / "dom.html").write_text(res.stdout, encoding="utf-8")
    drawn = drawn_charts(res.stdout)
    if vega and drawn == 0:
        fail(f"check_plots_offline: no chart was drawn (0 of {vega} vega plots); "
             f"screenshot: {shot}")
    if drawn < vega:
        fail(f"check_plots_offline: only {drawn} of {vega} vega plots were drawn; "
             f"screenshot: {shot}")
    extra = f", {images} image plot(s) (static files in {out / 'static'})" if images else ""
    print(f"check_plots_offline: ok, {drawn} of {vega} vega plots drawn with no network{extra}")
    print(f"page:       {index}")
    print(f"screenshot: {shot}")


if __name__ == "__main__":
    main()

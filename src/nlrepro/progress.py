"""A periodic progress line with rate and ETA, for long loops in stages."""
from __future__ import annotations

import sys
import time


class Progress:
    """``Progress("filter", total=n, unit="docs")``; call ``update(k)``, then ``close()``.
    Prints at most every ``every`` seconds to stderr, so logs stay short."""

    def __init__(self, name: str, total: int | None = None, unit: str = "items",
                 every: float = 5.0):
        self.name, self.total, self.unit, self.every = name, total, unit, every
        self.done = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._print(now)

    def _print(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        line = f"{self.name}: {self.done:,}"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            line += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
            line += f", {rate:,.0f} {self.unit}/s, ETA {eta:.0f}s"
        else:
            line += f" {self.unit}, {rate:,.0f} {self.unit}/s"
        print(line, file=sys.stderr, flush=True)

    def close(self) -> float:
        """Print the final line; return the elapsed seconds."""
        now = time.monotonic()
        self._print(now)
        return now - self.start

"""A dependency-free progress bar on stderr (redrawn at most every 0.5 s; off when not a TTY
unless forced), so the train commands need no tqdm."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, *, enabled: bool = True, initial: int = 0) -> None:
        self.total, self.label, self.n = max(total, 1), label, initial
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0
        self.postfix = ""

    def update(self, k: int = 1, postfix: str | None = None) -> None:
        self.n += k
        if postfix is not None:
            self.postfix = postfix
        now = time.monotonic()
        if self.enabled and (now - self._last >= 0.5 or self.n >= self.total):
            self._last = now
            frac = min(self.n / self.total, 1.0)
            rate = self.n / max(now - self.t0, 1e-9)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.n}/{self.total} {rate:,.0f}/s {self.postfix}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()

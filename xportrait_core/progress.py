"""A terminal progress line for the command-line tools (standard library only)."""
from __future__ import annotations

import sys
import time


class ProgressLine:
    """One self-overwriting status line on stderr, redrawn at most a few times a second."""

    def __init__(self, stream=None, interval: float = 0.25):
        self._stream, self.interval, self._last, self._open = stream, interval, 0.0, False

    @property
    def stream(self):
        return self._stream or sys.stderr  # looked up late so redirected stderr is honoured

    def __call__(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        share = 100.0 * done / total if total else 100.0
        self.stream.write(f"\r{label:<18} {share:5.1f}%  {done / 1e9:6.2f} / {total / 1e9:.2f} GB")
        self.stream.flush()
        self._open = True

    def finish(self, message: str = "") -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()

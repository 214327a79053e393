"""A progress line at a steady interval when no terminal shows the progress bar (nohup, cluster logs, a face's
log file): without it, a long run into a file prints nothing until its end."""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from swinssl.summary import duration

PROGRESS_EVERY_ENV = "SWINSSL_PROGRESS_EVERY"  # seconds between lines (0: none); tests make it short
DEFAULT_EVERY_S = 30.0


def progress_interval() -> float:
    """Seconds between progress lines: ``$SWINSSL_PROGRESS_EVERY`` when it is a number, else 30."""
    try:
        return float(os.environ.get(PROGRESS_EVERY_ENV, DEFAULT_EVERY_S))
    except ValueError:
        return DEFAULT_EVERY_S


class ProgressLines:
    """Turns ``progress`` events into lines on ``stream``: counted ones (a step of a total) one every ``every_s`` seconds,
    a stage's message at once."""

    def __init__(self, every_s: float, stream: IO[str]) -> None:
        self.every_s = every_s
        self.stream = stream
        self._last = time.monotonic()

    @classmethod
    def for_stderr(cls) -> ProgressLines | None:
        """Lines on stderr when it is not a terminal (where the progress bar would be) and the interval is above 0."""
        every = progress_interval()
        return cls(every, sys.stderr) if every > 0 and not sys.stderr.isatty() else None

    def offer(self, record: dict[str, Any]) -> None:
        """Prints a ``progress`` event that carries a message (a stage starting: always), or a step and a total (once the
        interval has passed since the last line)."""
        if record.get("event") != "progress":
            return
        stage = f"{time.strftime('%H:%M:%S')} {record.get('stage', 'training')}"
        if record.get("message"):
            print(f"{stage}: {record['message']}", file=self.stream, flush=True)
            return
        now = time.monotonic()
        if not isinstance(record.get("step"), int) or not record.get("total") or now - self._last < self.every_s:
            return
        self._last = now
        step, total = record["step"], record["total"]
        parts = [f"{stage}: {step} of {total} ({100 * step / total:.0f} %)"]
        if record.get("eta_s") is not None:
            parts.append(f"about {duration(record['eta_s'])} left")
        if isinstance(record.get("losses"), dict) and record["losses"].get("total") is not None:
            parts.append(f"loss {record['losses']['total']:.4f}")
        print(", ".join(parts), file=self.stream, flush=True)

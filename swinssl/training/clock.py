"""Timing of training steps: time waiting for data, step time, and a smoothed average for speed and ETA."""

from __future__ import annotations

import time


class StepClock:
    """Call :meth:`start` before fetching a batch, :meth:`data_ready` after, :meth:`stop` after the step."""

    def __init__(self, smoothing: float = 0.1) -> None:
        self.smoothing = smoothing
        self.average: float | None = None
        self.data_wait = 0.0
        self.last = 0.0
        self._started = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()

    def data_ready(self) -> None:
        self.data_wait = time.perf_counter() - self._started

    def stop(self) -> float:
        self.last = time.perf_counter() - self._started
        self.average = self.last if self.average is None else (1 - self.smoothing) * self.average + self.smoothing * self.last
        return self.last

    def eta(self, remaining_steps: int) -> float:
        return remaining_steps * (self.average or 0.0)

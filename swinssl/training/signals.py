"""Graceful stop on SIGTERM / SIGINT or a stop-request file: the loop finishes its step, checkpoints, and exits."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

# Exit statuses of the CLI (documented in the README).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3

STOP_FILE_REASON = "stop_file"


class StopRequest:
    """Context manager that turns SIGTERM/SIGINT, or the appearance of ``stop_file``, into a flag the
    training loop polls after every step.

    The file is the channel for callers that cannot signal the engine: on Windows there is no SIGTERM,
    and inside 3D Slicer the engine runs under a launcher (PythonSlicer) that a signal would end instead.
    A second SIGINT (Ctrl-C twice) interrupts at once.
    """

    def __init__(self, stop_file: str | Path | None = None) -> None:
        self.stop_file = Path(stop_file) if stop_file else None
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def reason(self) -> str | None:
        """``SIGTERM``/``SIGINT``, ``stop_file``, or None while no stop was asked for."""
        if self.signal_name:
            return self.signal_name
        if self.stop_file is not None and self.stop_file.exists():
            return STOP_FILE_REASON
        return None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

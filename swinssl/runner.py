"""Running the CLI as a subprocess and reading its events without blocking (used by the Slicer modules).

The child runs in its own process group so that cancel stops the whole tree (torchrun workers,
data threads); ``stop`` asks for a graceful stop (SIGTERM: finish the step, checkpoint, exit 3).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENGINE_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class EngineProcess:
    """A running ``python -m swinssl ...`` with its event file; ``poll`` returns the new events."""

    process: subprocess.Popen
    events_path: Path
    log_path: Path
    _offset: int = 0
    _partial: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, arguments: list[str], events_path: Path, python: str | None = None, cwd: Path | None = None) -> EngineProcess:
        events_path.parent.mkdir(parents=True, exist_ok=True)
        events_path.write_text("")
        log_path = events_path.with_suffix(".log")
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ENGINE_ROOT), environment.get("PYTHONPATH")]))
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [python or sys.executable, "-m", "swinssl", *arguments, "--events", str(events_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=environment, start_new_session=True,
            )
        return cls(process, events_path, log_path)

    def poll(self) -> list[dict[str, Any]]:
        """Events written since the last call (whole lines only); never blocks."""
        with self.events_path.open("r", encoding="utf-8") as stream:
            stream.seek(self._offset)
            chunk = stream.read()
            self._offset = stream.tell()
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        new = [json.loads(line) for line in lines if line.strip()]
        self.events.extend(new)
        return new

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """Graceful stop: SIGTERM to the process group (training writes a checkpoint and exits with 3)."""
        if self.running:
            os.killpg(self.process.pid, signal.SIGTERM)

    def cancel(self, grace_seconds: float = 5.0) -> int:
        """Stops the whole process tree now: SIGTERM, then SIGKILL after ``grace_seconds``; returns the exit code."""
        if self.running:
            os.killpg(self.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_seconds
            while self.running and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.running:
                os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

"""JSON Lines event protocol shared by the engine, the CLI and the Slicer modules.

Every line is one JSON object with at least ``event`` (its kind), ``time`` (Unix seconds) and
``schema`` (:data:`SCHEMA_VERSION`). Kinds and their fields are documented in the README.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any

from swinssl.progress_lines import ProgressLines

SCHEMA_VERSION = 1
EVENT_KINDS = ("start", "cache", "progress", "preview", "checkpoint", "warning", "stopped", "done", "error")


def _jsonable(value: Any) -> Any:
    """Converts paths, numpy scalars and non-finite floats into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EventLog:
    """Writes events as JSON Lines to a file, to stdout (``"-"``), or nowhere (``None``).

    Each line is flushed at once so that a reader polling the file sees whole events. With
    ``echo_warnings`` (the command line does this) every ``warning`` is also printed to stderr as one line,
    and :meth:`close` ends with their count, so a terminal run never hides a skipped file; when stderr is no terminal,
    ``progress`` events also become a line there every 30 s (:mod:`swinssl.progress_lines`).
    """

    def __init__(self, target: str | Path | None = None, echo_warnings: bool = False) -> None:
        self._stream: IO[str] | None = None
        self._owns_stream = False
        self.echo_warnings = echo_warnings
        self.warnings = 0
        self.last: dict[str, dict[str, Any]] = {}  # the latest event of each kind, for summaries
        self._progress_lines = ProgressLines.for_stderr() if echo_warnings else None  # the command line's log without a terminal
        if target is None:
            return
        if str(target) == "-":
            self._stream = sys.stdout
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = path.open("a", encoding="utf-8")
            self._owns_stream = True

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Writes one event and returns it as a dict."""
        if event not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {event!r}; expected one of {EVENT_KINDS}")
        record = {"event": event, "time": round(time.time(), 3), "schema": SCHEMA_VERSION, **_jsonable(fields)}
        self.last[event] = record
        if event == "warning":
            self.warnings += 1
            if self.echo_warnings:
                where = f"{record['file']}: " if record.get("file") else ""
                print(f"warning: {where}{record.get('reason')}", file=sys.stderr, flush=True)
        if self._progress_lines is not None:
            self._progress_lines.offer(record)
        if self._stream is not None:
            self._stream.write(json.dumps(record) + "\n")
            self._stream.flush()
        return record

    def close(self) -> None:
        if self.echo_warnings and self.warnings:
            print(f"{self.warnings} warning{'s' if self.warnings > 1 else ''} (listed above)", file=sys.stderr, flush=True)
            self.echo_warnings = False
        if self._owns_stream and self._stream is not None:
            self._stream.close()
        self._stream = None


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Reads every complete event line of a JSON Lines file (a partial last line is ignored)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events

"""Running the engine as a subprocess and reading its events (the one way every face runs the engine).

Inside 3D Slicer ``sys.executable`` is PythonSlicer, a CTKAppLauncher that starts the real Python as
its child and forwards no signals: a signal sent to it ends the launcher and leaves the engine
running. So this runner never relies on signals reaching the engine:

- **stop** (graceful, every platform): the engine checks a stop-request file after every step
  (``--stop-file``), finishes the step, writes its checkpoint, emits ``stopped`` and exits with 3;
- **cancel** (hard): every process of the tree, the launcher's children included, is terminated and
  then killed through psutil (SIGTERM/SIGKILL on POSIX, TerminateProcess on Windows);
- the run is **over** only when the whole tree has exited, and its **outcome** comes from the engine's
  own events (``done`` / ``stopped`` / ``error``), never from the launcher's exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ENGINE_ROOT = Path(__file__).resolve().parent.parent
FINAL_EVENTS = ("done", "stopped", "error")
CANCELLED = "cancelled"
FAILED = "failed"  # the process tree ended without a final event (crash, killed from outside)
# Windows creation flags (subprocess defines the names only on Windows): own process group, no console window.
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000


def popen_options(platform: str = sys.platform) -> dict[str, Any]:
    """Popen keywords that detach the engine from the caller's console and signals on ``platform``."""
    if platform == "win32":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}  # its own process group: a terminal's Ctrl-C does not reach it


@dataclass
class EngineProcess:
    """A running ``python -m swinssl ...`` (possibly behind a launcher) with its event and stop files."""

    process: subprocess.Popen
    events_path: Path
    log_path: Path
    stop_path: Path | None
    events: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False
    _offset: int = 0
    _partial: str = ""
    _tree: dict[int, psutil.Process] = field(default_factory=dict)

    @classmethod
    def start(cls, arguments: list[str], events_path: Path, python: str | None = None, cwd: Path | None = None,
              stoppable: bool = False, platform: str = sys.platform) -> EngineProcess:
        """Starts the engine with ``arguments``; ``python`` may be a launcher such as PythonSlicer.
        ``stoppable`` adds ``--stop-file`` (pretrain and finetune accept it)."""
        events_path.parent.mkdir(parents=True, exist_ok=True)
        events_path.write_text("")
        log_path = events_path.with_suffix(".log")
        stop_path = events_path.with_suffix(".stop") if stoppable else None
        command = [python or sys.executable, "-m", "swinssl", *arguments, "--events", str(events_path)]
        if stop_path is not None:
            stop_path.unlink(missing_ok=True)  # a request left by an earlier run must not stop this one
            command += ["--stop-file", str(stop_path)]
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ENGINE_ROOT), environment.get("PYTHONPATH")]))
        with log_path.open("w") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                       env=environment, **popen_options(platform))
        engine = cls(process, events_path, log_path, stop_path)
        engine._track()
        return engine

    # --- the process tree ---------------------------------------------------------------------------
    def _track(self) -> None:
        """Remembers every descendant seen so far: once a launcher has gone, its orphaned children are
        found nowhere else. Nothing new is looked up once the direct child is reaped (its pid may be reused)."""
        if self.process.returncode is not None:
            return
        try:
            root = self._tree.get(self.process.pid) or psutil.Process(self.process.pid)
            self._tree.setdefault(root.pid, root)
            for child in root.children(recursive=True):
                self._tree.setdefault(child.pid, child)
        except psutil.Error:
            pass

    def alive_processes(self) -> list[psutil.Process]:
        """Processes of the tree still running: the direct child as Popen sees it (which also reaps it),
        descendants as psutil sees them (zombies count as ended: an orphan waits for init to reap it)."""
        self._track()
        alive = []
        for pid, process in self._tree.items():
            try:
                if pid == self.process.pid:
                    running = self.process.poll() is None
                else:
                    running = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                continue
            if running:
                alive.append(process)
        return alive

    @property
    def running(self) -> bool:
        return bool(self.alive_processes())

    @property
    def exit_code(self) -> int | None:
        """The direct child's exit status (the launcher's, when there is one) once the whole tree has ended."""
        return None if self.running else self.process.poll()

    @property
    def outcome(self) -> str | None:
        """None while running; else ``done``, ``stopped`` or ``error`` as the engine reported it,
        ``cancelled`` after :meth:`cancel`, or ``failed`` when the tree ended without a final event."""
        if self.running:
            return None
        self.poll()
        final = next((event["event"] for event in reversed(self.events) if event["event"] in FINAL_EVENTS), None)
        if self.cancelled and final != "done":
            return CANCELLED  # a training cancelled during its grace period may have written "stopped" first
        return final or FAILED

    # --- events and logs ----------------------------------------------------------------------------
    def poll(self) -> list[dict[str, Any]]:
        """Events written since the last call (whole lines only); never blocks."""
        self._track()
        if not self.events_path.exists():  # a cancelled run's temporary folder may be gone already
            return []
        with self.events_path.open("r", encoding="utf-8") as stream:
            stream.seek(self._offset)
            chunk = stream.read()
            self._offset = stream.tell()
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        new = [json.loads(line) for line in lines if line.strip()]
        self.events.extend(new)
        return new

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:] if self.log_path.exists() else ""

    # --- control ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Graceful stop on every platform: writes the stop-request file; the engine finishes its step,
        writes a checkpoint, emits ``stopped`` and exits with 3. Runs started without ``stoppable``
        have no such file and are cancelled instead."""
        if self.stop_path is None:
            self.cancel()
        elif self.running:
            self.stop_path.write_text("stop requested\n")

    def cancel(self, grace_seconds: float = 3.0) -> bool:
        """Ends the whole tree now: terminate, then kill what is left after ``grace_seconds``; repeated while new
        descendants appear (a launcher or torchrun may start one while the first are ending). Returns within about
        ``2 * grace_seconds`` (a face calls it on its GUI thread): True when the tree has ended, False when a process
        outlived its kill (e.g. stuck in a GPU driver call); it is left behind, and :attr:`running` stays True."""
        import time

        deadline = time.monotonic() + 2 * grace_seconds
        while processes := self.alive_processes():  # alive_processes() also reaps the direct child
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.cancelled = True
            for process in processes:
                try:
                    process.terminate()
                except psutil.Error:
                    continue
            _, alive = psutil.wait_procs(processes, timeout=min(grace_seconds, left / 2))
            for process in alive:
                try:
                    process.kill()
                except psutil.Error:
                    continue
            psutil.wait_procs(alive, timeout=max(0.0, deadline - time.monotonic()))
        return True

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> str:
        """Blocks until the whole tree has ended (or ``timeout`` seconds); returns :attr:`outcome`."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the engine is still running after {timeout} s")
            time.sleep(interval)
        return self.outcome

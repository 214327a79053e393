"""A run's output folder: a previous run is never overwritten by accident, with ``--overwrite`` it is
kept aside until the new run's first checkpoint is safely written, and while a run writes into it a lock
file names its process, so a second run into the same folder is refused. Imports nothing heavy: the CLI
checks the folder before torch is loaded."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from swinssl.io.atomic import remove_stale_temp_files

PRETRAIN_MARKERS = ("checkpoint.pt", "config.json", "encoder.safetensors")
FINETUNE_MARKERS = ("model.json", "model.safetensors", "training/checkpoint.pt", "training/config.json")
PREVIOUS_RUN = ".previous-run"
LOCK_FILE = ".swinssl-lock"  # {"pid", "host", "command", "started"} of the run writing into the folder
DAMAGED_LOCK_GRACE_S = 10.0  # an unreadable lock file younger than this is being written; older, a crash left it


class RunFolderError(ValueError):
    """``--out`` holds a run that this command would replace without being asked to."""


def existing_run(out: Path, markers: tuple[str, ...]) -> Path | None:
    """The first file of a previous run found in ``out``, or None."""
    return next((Path(out) / marker for marker in markers if (Path(out) / marker).is_file()), None)


def check_run_folder(out: Path, markers: tuple[str, ...], resume: bool, overwrite: bool, check_lock: bool = True) -> None:
    """Refuses a folder another live run writes into (:func:`lock_owner`; not ``check_lock`` on torchrun's ranks
    other than 0, whose rank 0 holds the lock), and to start a new run over an existing one unless ``overwrite``;
    resuming needs a run."""
    owner = lock_owner(out) if check_lock else None
    if owner is not None:
        raise RunFolderError(f"{out} is in use by {describe_owner(owner)}: wait for that run to end, or stop it")
    found = existing_run(out, markers)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other")
    if found is not None and not resume and not overwrite:
        raise RunFolderError(f"{out} already holds a run ({found.relative_to(out)}): add --resume to continue it, "
                             "or --overwrite to replace it (the old run is kept until the new one's first checkpoint)")


def set_aside_previous_run(out: Path) -> Path | None:
    """Moves the contents of ``out`` into ``out/.previous-run`` (returned; None when ``out`` is empty).

    An existing ``.previous-run`` means an earlier overwrite never reached its first checkpoint: that
    folder still holds the last good run and is kept, and the unfinished attempt is removed.
    """
    out = Path(out)
    previous = out / PREVIOUS_RUN
    contents = [path for path in out.iterdir() if path.name not in (PREVIOUS_RUN, LOCK_FILE)] if out.is_dir() else []
    if previous.is_dir():
        for path in contents:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        return previous
    if not contents:
        return None
    previous.mkdir()
    for path in contents:
        path.rename(previous / path.name)
    return previous


def discard_previous_run(out: Path) -> None:
    """Called once the new run's first checkpoint is on disk."""
    shutil.rmtree(Path(out) / PREVIOUS_RUN, ignore_errors=True)


def prepare_run_folder(out: Path, overwrite: bool, subfolders: tuple[str, ...] = ()) -> Path | None:
    """Start of a run on the main process: sets a previous run aside when ``overwrite``, and removes
    temporary files a killed writer left in ``out`` and its ``subfolders``."""
    previous = set_aside_previous_run(out) if overwrite else None
    for folder in (Path(out), *(Path(out) / name for name in subfolders)):
        remove_stale_temp_files(folder)
    return previous


def _process_alive(pid: int, started: float | None) -> bool:
    """Whether ``pid`` runs and began no later than ``started`` (Unix seconds): a later process reuses the number."""
    import psutil

    try:
        created = psutil.Process(pid).create_time()
        return started is None or created <= started + 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # e.g. another user's process that cannot be inspected
        return True


def lock_owner(out: Path) -> dict | None:
    """The run holding ``out`` ({"pid", "host", "command", "started"}), or None when no live process holds it.

    A lock left by a process that is gone (killed, crashed; its pid maybe reused since) is stale and counts as free. A lock taken on
    another host (a shared folder) counts as held: its process cannot be checked from here.
    """
    try:
        owner = json.loads((Path(out) / LOCK_FILE).read_text(encoding="utf-8"))
        pid = int(owner["pid"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # being written this instant, or left damaged by a crash
        try:
            fresh = time.time() - (Path(out) / LOCK_FILE).stat().st_mtime < DAMAGED_LOCK_GRACE_S
        except OSError:
            return None
        return {"pid": None, "host": None, "command": "?", "started": None} if fresh else None
    if owner.get("host") == socket.gethostname() and not _process_alive(pid, owner.get("started")):
        return None
    return owner


def describe_owner(owner: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(owner["started"])) if owner.get("started") else "unknown time"
    host = f" on {owner['host']}" if owner.get("host") and owner["host"] != socket.gethostname() else ""
    return f"swinssl {owner.get('command', '?')} (pid {owner.get('pid')}{host}, started {started})"


class RunFolderLock:
    """Held while a run writes into ``out``: a second run into the same folder is refused with the owner's pid.

    Use as a context manager around the whole run; the faces may call :func:`lock_owner` to show that a folder is
    busy. The lock file is created with O_EXCL (one winner when two runs start at once); a stale one is replaced.
    """

    def __init__(self, out: Path, command: str) -> None:
        self.out = Path(out)
        self.command = command
        self.path = self.out / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "started": time.time()})
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = lock_owner(self.out)
                if owner is not None:
                    raise RunFolderError(f"{self.out} is in use by {describe_owner(owner)}: wait for that run to end, or stop it") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(descriptor, "w") as stream:
                stream.write(record)
            self.held = True
            return
        raise RunFolderError(f"{self.out}: could not take the run lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

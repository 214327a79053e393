"""A run's output folder: a previous run is never overwritten by accident, and with ``--overwrite`` it is
kept aside until the new run's first checkpoint is safely written. Imports nothing heavy: the CLI checks
the folder before torch is loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

from swinssl.io.atomic import remove_stale_temp_files

PRETRAIN_MARKERS = ("checkpoint.pt", "config.json", "encoder.safetensors")
FINETUNE_MARKERS = ("model.json", "model.safetensors", "training/checkpoint.pt", "training/config.json")
PREVIOUS_RUN = ".previous-run"


class RunFolderError(ValueError):
    """``--out`` holds a run that this command would replace without being asked to."""


def existing_run(out: Path, markers: tuple[str, ...]) -> Path | None:
    """The first file of a previous run found in ``out``, or None."""
    return next((Path(out) / marker for marker in markers if (Path(out) / marker).is_file()), None)


def check_run_folder(out: Path, markers: tuple[str, ...], resume: bool, overwrite: bool) -> None:
    """Refuses to start a new run over an existing one unless ``overwrite``; resuming needs a run."""
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
    contents = [path for path in out.iterdir() if path.name != PREVIOUS_RUN] if out.is_dir() else []
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

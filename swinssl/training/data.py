"""From data folders to cached, validated volumes, with a warning event for each file left out."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from swinssl.events import EventLog
from swinssl.io.discovery import VOLUME_SUFFIXES, find_volumes
from swinssl.io.reader import VolumeError
from swinssl.preprocessing.cache import PrepSettings, PreparedVolume, VolumeCache
from swinssl.training.distributed import Runtime, barrier


class DataSetError(RuntimeError):
    """The data set as a whole is unusable (nothing found, or every volume was skipped)."""


def default_cache_dir() -> Path:
    """``$SWINSSL_CACHE``, else ``$XDG_CACHE_HOME/swinssl/volumes`` (``~/.cache/swinssl/volumes``)."""
    if os.environ.get("SWINSSL_CACHE"):
        return Path(os.environ["SWINSSL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swinssl" / "volumes"


def load_volumes(
    roots: list[str], settings: PrepSettings, cache_dir: str | None, events: EventLog, runtime: Runtime
) -> tuple[list[PreparedVolume], int]:
    """Finds, preprocesses (once, on rank 0) and memory-maps every usable volume under ``roots``.

    Returns:
        (volumes, number of files skipped with a warning event)
    Raises:
        DataSetError: when no usable volume is left.
    """
    sources, skipped = find_volumes(roots)
    for path, reason in skipped:
        events.emit("warning", file=str(path), reason=reason)
    series_per_folder = Counter(source.path for source in sources if source.is_dicom)
    for folder, count in sorted(series_per_folder.items()):
        if count > 1:  # often a scout, a contrast phase and a reconstruction of one patient
            events.emit("warning", file=str(folder), reason=f"holds {count} DICOM series; each is used as a separate volume")
    if not sources:
        raise DataSetError(f"no volumes found in {', '.join(roots)} (looked for {', '.join(VOLUME_SUFFIXES)} files and DICOM series)")
    cache = VolumeCache(cache_dir or default_cache_dir())
    volumes: list[PreparedVolume] = []
    bad = 0
    if not runtime.is_main:
        barrier(runtime)  # rank 0 builds the cache first
    for source in sources:
        try:
            volumes.append(cache.get(source, settings))
        except VolumeError as error:
            bad += 1
            events.emit("warning", file=error.source, reason=error.reason)
    if runtime.is_main:
        barrier(runtime)
    if not volumes:
        raise DataSetError(f"none of the {len(sources)} volume(s) in {', '.join(roots)} is usable; see the warnings for each file")
    return volumes, bad + len(skipped)

"""From data folders to cached, validated volumes, with a warning event for each file left out."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from swinssl.events import EventLog
from swinssl.io.discovery import VOLUME_SUFFIXES, VolumeSource, find_volumes
from swinssl.preprocessing.cache import PrepSettings, PreparedVolume, VolumeCache
from swinssl.preprocessing.cache_build import CacheProgress, CacheReport, build_cache, default_workers
from swinssl.training.distributed import Runtime


class DataSetError(RuntimeError):
    """The data set as a whole is unusable (nothing found, or every volume was skipped)."""


@dataclass
class LoadedVolumes:
    """The usable volumes (memory-mapped), the files skipped with a warning event, the entries this process built."""

    volumes: list[PreparedVolume]
    skipped: int = 0
    built: int = 0


def default_cache_dir() -> Path:
    """``$SWINSSL_CACHE``, else ``$XDG_CACHE_HOME/swinssl/volumes`` (``~/.cache/swinssl/volumes``)."""
    if os.environ.get("SWINSSL_CACHE"):
        return Path(os.environ["SWINSSL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swinssl" / "volumes"


def load_volumes(
    roots: list[str], settings: PrepSettings, cache_dir: str | None, events: EventLog, runtime: Runtime, workers: int | None = None,
    show_progress: bool = False,
) -> LoadedVolumes:
    """Finds, preprocesses (once, shared by all ranks, see :mod:`swinssl.preprocessing.cache_build`) and
    memory-maps every usable volume under ``roots``; ``cache`` events report the build.

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
    report = cache_with_progress(sources, settings, cache, workers or default_workers(), runtime.rank, runtime.world_size, events,
                                 show_progress and runtime.is_main)
    volumes: list[PreparedVolume] = []
    for source, failure in zip(sources, report.failures):
        if failure is None:
            volumes.append(cache.load(source, settings))
        else:
            events.emit("warning", file=source.name, reason=failure)
    if not volumes:
        raise DataSetError(f"none of the {len(sources)} volume(s) in {', '.join(roots)} is usable; see the warnings for each file")
    return LoadedVolumes(volumes, len(sources) - len(volumes) + len(skipped), len(report.built))


def cache_with_progress(sources: list[VolumeSource], settings: PrepSettings, cache: VolumeCache, workers: int, rank: int, world_size: int,
                        events: EventLog, show_progress: bool) -> CacheReport:
    """:func:`build_cache` with a ``cache`` event per update (done, total, built, volumes/s, ETA) and a terminal bar."""
    bar = tqdm(total=len(sources), disable=not show_progress, unit="volume", desc="preparing volumes", dynamic_ncols=True)

    def on_progress(progress: CacheProgress) -> None:
        events.emit("cache", done=progress.done, total=progress.total, built=progress.built,
                    volumes_per_s=round(progress.volumes_per_s, 3), eta_s=None if progress.eta_s is None else round(progress.eta_s, 1),
                    workers=progress.workers)
        bar.n = progress.done
        bar.refresh()

    try:
        return build_cache(sources, settings, cache, workers, rank, world_size, on_progress)
    finally:
        bar.close()

"""On-disk cache of preprocessed volumes: one float16 ``.npy`` (memory-mapped) + JSON per volume.

A pretraining step reads random crops straight from the memory map; no NIfTI/DICOM is decoded
after the first pass. An entry is keyed by the source path and the preprocessing settings, and is
rebuilt when the source's size, mtime or file count changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swinssl import __version__
from swinssl.io.atomic import atomic_write
from swinssl.io.discovery import VolumeSource
from swinssl.io.reader import VolumeError, read_volume
from swinssl.preprocessing.intensity import IntensitySettings, normalize_channels
from swinssl.preprocessing.spatial import Geometry, crop_foreground, image_to_array, orient_ras, pad_to_size, resample_to_spacing

CACHE_FORMAT = 1


@dataclass(frozen=True)
class PrepSettings:
    """Everything that determines the preprocessed array of a source volume."""

    intensity: IntensitySettings | tuple[IntensitySettings, ...] = IntensitySettings()  # one, or one per channel
    spacing: tuple[float, float, float] | None = None
    orient_ras: bool = True
    crop_foreground: bool = True
    min_size: tuple[int, int, int] = (96, 96, 96)
    in_channels: int = 1

    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclass
class PreparedVolume:
    """A preprocessed volume: ``array`` is float16 (C, X, Y, Z) in 0..1, usually a read-only memmap."""

    source_name: str
    array: np.ndarray
    geometry: Geometry
    modality: str = ""  # tag given by the data folder (pretraining with several modalities)


def prepare_volume(source: VolumeSource, settings: PrepSettings) -> tuple[np.ndarray, Geometry]:
    """Reads, validates and preprocesses one source into float32 (C, X, Y, Z) and its geometry.

    Raises:
        VolumeError: for unreadable or unusable volumes; the message names the file.
    """
    image = read_volume(source, settings.in_channels)
    if settings.orient_ras:
        image = orient_ras(image)
    raw = image_to_array(image)
    if settings.spacing is not None:
        image = resample_to_spacing(image, settings.spacing)
        raw = image_to_array(image)
    geometry = Geometry.of_image(image)
    array = normalize_channels(raw, settings.intensity)
    if settings.crop_foreground:
        array, geometry = crop_foreground(array, geometry)
    array = pad_to_size(array, settings.min_size)
    return array, geometry


class VolumeCache:
    """Preprocessed volumes stored under ``root``; see the module docstring.

    Per entry: ``<key>.npy`` + ``<key>.json`` (written in that order, each atomically), ``<key>.error.json``
    when the source is unusable, and ``<key>.lock`` while a process builds it (:mod:`.cache_build`).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self, source: VolumeSource, settings: PrepSettings) -> str:
        identity = f"{source.path.resolve()}|{source.series_uid}|{settings.key()}"
        return hashlib.sha1(identity.encode()).hexdigest()[:20]

    def _paths(self, source: VolumeSource, settings: PrepSettings) -> tuple[Path, Path]:
        key = self.key(source, settings)
        return self.root / f"{key}.npy", self.root / f"{key}.json"

    def error_path(self, source: VolumeSource, settings: PrepSettings) -> Path:
        return self.root / f"{self.key(source, settings)}.error.json"

    def is_fresh(self, source: VolumeSource, settings: PrepSettings) -> bool:
        array_path, meta_path = self._paths(source, settings)
        if not (array_path.exists() and meta_path.exists()):
            return False
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return meta.get("format") == CACHE_FORMAT and meta.get("fingerprint") == list(source.fingerprint())

    def known_failure(self, source: VolumeSource, settings: PrepSettings) -> str | None:
        """Why this exact source (same fingerprint, same swinssl version) could not be prepared before, else None."""
        path = self.error_path(source, settings)
        if not path.exists():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("fingerprint") != list(source.fingerprint()) or record.get("swinssl_version") != __version__:
            return None
        return record["reason"]

    def build(self, source: VolumeSource, settings: PrepSettings) -> None:
        """Preprocesses ``source`` and writes its entry; an unusable source leaves an error record instead.

        Raises:
            VolumeError: the source is unusable (the record is written first, so other processes need not decode it).
        """
        array_path, meta_path = self._paths(source, settings)
        try:
            array, geometry = prepare_volume(source, settings)
        except VolumeError as error:
            record = {"source": source.name, "fingerprint": list(source.fingerprint()), "reason": error.reason, "swinssl_version": __version__}
            atomic_write(self.error_path(source, settings), lambda f: f.write(json.dumps(record).encode()))
            raise
        meta = {
            "format": CACHE_FORMAT,
            "source": source.name,
            "fingerprint": list(source.fingerprint()),
            "shape": list(array.shape),
            "geometry": geometry.to_dict(),
        }
        atomic_write(array_path, lambda f: np.save(f, array.astype(np.float16)))
        atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
        self.error_path(source, settings).unlink(missing_ok=True)

    def load(self, source: VolumeSource, settings: PrepSettings) -> PreparedVolume:
        """The built entry, memory-mapped read-only."""
        array_path, meta_path = self._paths(source, settings)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        array = np.load(array_path, mmap_mode="r")
        return PreparedVolume(meta["source"], array, Geometry.from_dict(meta["geometry"]))

    def get(self, source: VolumeSource, settings: PrepSettings) -> PreparedVolume:
        """Returns the cached volume, building (or rebuilding) it first when missing or stale."""
        if not self.is_fresh(source, settings):
            self.build(source, settings)
        return self.load(source, settings)

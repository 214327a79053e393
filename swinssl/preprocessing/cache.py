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

from swinssl.io.atomic import atomic_write
from swinssl.io.discovery import VolumeSource
from swinssl.io.reader import read_volume
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
    """Preprocessed volumes stored under ``root``; see the module docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _paths(self, source: VolumeSource, settings: PrepSettings) -> tuple[Path, Path]:
        identity = f"{source.path.resolve()}|{source.series_uid}|{settings.key()}"
        digest = hashlib.sha1(identity.encode()).hexdigest()[:20]
        return self.root / f"{digest}.npy", self.root / f"{digest}.json"

    def is_fresh(self, source: VolumeSource, settings: PrepSettings) -> bool:
        array_path, meta_path = self._paths(source, settings)
        if not (array_path.exists() and meta_path.exists()):
            return False
        meta = json.loads(meta_path.read_text())
        return meta.get("format") == CACHE_FORMAT and meta.get("fingerprint") == list(source.fingerprint())

    def get(self, source: VolumeSource, settings: PrepSettings) -> PreparedVolume:
        """Returns the cached volume, building (or rebuilding) it first when missing or stale."""
        array_path, meta_path = self._paths(source, settings)
        if not self.is_fresh(source, settings):
            array, geometry = prepare_volume(source, settings)
            meta = {
                "format": CACHE_FORMAT,
                "source": source.name,
                "fingerprint": list(source.fingerprint()),
                "shape": list(array.shape),
                "geometry": geometry.to_dict(),
            }
            atomic_write(array_path, lambda f: np.save(f, array.astype(np.float16)))
            atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
        meta = json.loads(meta_path.read_text())
        array = np.load(array_path, mmap_mode="r")
        return PreparedVolume(meta["source"], array, Geometry.from_dict(meta["geometry"]))

"""Recursive discovery of volumes in folders: image files and DICOM series."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
# Files named like label maps are annotations, not images to pretrain on.
LABEL_NAME_PATTERN = re.compile(r"(_labels?|_seg|_mask|\.seg)$", re.IGNORECASE)
LABEL_FOLDER_NAMES = {"labelstr", "labelsts", "labels"}


@dataclass(frozen=True)
class VolumeSource:
    """One volume: an image file, or one DICOM series (folder + SeriesInstanceUID)."""

    path: Path
    series_uid: str | None = None

    @property
    def is_dicom(self) -> bool:
        return self.series_uid is not None

    @property
    def name(self) -> str:
        if self.is_dicom:
            return f"{self.path} (DICOM series {self.series_uid or 'without UID'})"
        return str(self.path)

    def dicom_files(self) -> list[str]:
        """The slice files of this DICOM series, sorted by GDCM along the slice normal."""
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(self.path), self.series_uid or ""))

    def fingerprint(self) -> tuple[int, int, int]:
        """(total bytes, newest mtime in ns, file count): changes whenever the source changes."""
        files = [Path(f) for f in self.dicom_files()] if self.is_dicom else [self.path]
        stats = [f.stat() for f in files]
        return sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats), len(stats)


def volume_stem(path: Path) -> str:
    """File name without its volume suffix (``case_1.nii.gz`` -> ``case_1``)."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def looks_like_label(path: Path) -> bool:
    """True for files named like annotations (``*_label(s)``, ``*_seg``, ``*_mask``, ``*.seg.nrrd``)."""
    if path.parent.name.lower() in LABEL_FOLDER_NAMES:
        return True
    return bool(LABEL_NAME_PATTERN.search(volume_stem(path)))


def _is_volume_file(name: str) -> bool:
    return name.lower().endswith(VOLUME_SUFFIXES)


def find_volumes(roots: list[str | Path], include_labels: bool = False,
                 recursive: bool = True) -> tuple[list[VolumeSource], list[tuple[Path, str]]]:
    """Finds volumes under each root, recursively (``recursive``; else in the root folder only), in a stable (sorted) order.

    A root may be a folder or a single file. A folder holding files without a volume suffix is
    asked for DICOM series; each SeriesInstanceUID becomes its own source.

    Returns:
        (sources, skipped): skipped lists (path, reason) for files left out on purpose.
    """
    sources: list[VolumeSource] = []
    skipped: list[tuple[Path, str]] = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"data path does not exist: {root}")
        if root.is_file():
            sources.append(VolumeSource(root))
            continue
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(subfolders) if recursive else []
            folder_path = Path(folder)
            other_files = False
            for name in sorted(files):
                path = folder_path / name
                if _is_volume_file(name):
                    if not include_labels and looks_like_label(path):
                        skipped.append((path, "named like a label map, not an image"))
                    else:
                        sources.append(VolumeSource(path))
                elif not name.startswith(".") and not name.lower().endswith((".raw", ".raw.gz", ".zraw", ".json", ".txt", ".md")):
                    other_files = True
            if other_files:
                for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder_path)):
                    sources.append(VolumeSource(folder_path, uid))
    return sources, skipped

"""Labelled cases on the model grid: image (C, X, Y, Z) in 0..1 and labels (X, Y, Z) in the model's table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import SimpleITK as sitk

from swinssl.finetune.cases import LabelledCase
from swinssl.io.reader import VolumeError, check_gzip_stream, read_volume
from swinssl.labels.segmentation_file import read_seg_nrrd
from swinssl.labels.table import LabelTable, normalize_name
from swinssl.preprocessing.intensity import CT_WINDOW, IntensitySettings, normalize_channels
from swinssl.preprocessing.spatial import Geometry, foreground_box, image_to_array, pad_to_size, ras_grid, resample_onto

GEOMETRY_TOLERANCE_MM = 0.5

UNNAMED_PREFIX = "label_"  # names given to label values when a case comes without a label table
NO_AIR_HU = -500.0  # a CT whose lowest value is above this has no air in it: probably not CT


@dataclass
class CaseLabels:
    image: sitk.Image
    names: dict[int, str]  # value in ``image`` -> segment name
    colors: dict[str, tuple]
    terminology: dict[str, dict]


def read_case_labels(case: LabelledCase) -> CaseLabels:
    """The case's label map and names (from the .seg.nrrd, or the case's table, or label_<value>)."""
    try:
        if case.label.name.lower().endswith(".seg.nrrd"):
            return CaseLabels(*read_seg_nrrd(case.label))
        if case.label.name.lower().endswith(".gz"):
            check_gzip_stream(case.label)
        image = sitk.ReadImage(str(case.label))
    except (RuntimeError, OSError, KeyError) as error:
        raise VolumeError(str(case.label), f"unreadable label file ({str(error).strip().splitlines()[-1] if str(error).strip() else error})") from error
    values = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)) if v != 0]
    names = case.names or {v: f"{UNNAMED_PREFIX}{v}" for v in values}
    return CaseLabels(image, names, {}, {})


def build_label_table(cases_labels: list[CaseLabels], classes: list[str] | None = None, parent: LabelTable | None = None) -> LabelTable:
    """One table for the model: ``classes`` in the given order, or every segment name in first-seen order.

    Names match case-insensitively ('Liver' == 'liver' == ' LIVER'); colours and terminology come
    from the first case that has them, else from ``parent`` (the table of the model the run starts from),
    whose classes may be annotated in no case (they are kept: no case teaches them, none unlearns them).
    """
    colors: dict[str, tuple] = {}
    terminology: dict[str, dict] = {}
    seen: dict[str, str] = {}
    for labels in cases_labels:
        for name in labels.names.values():
            seen.setdefault(normalize_name(name), name)
        for name, color in labels.colors.items():
            colors.setdefault(normalize_name(name), color)
        for name, entry in labels.terminology.items():
            terminology.setdefault(normalize_name(name), entry)
    for label in parent.labels if parent is not None else []:
        colors.setdefault(normalize_name(label.name), label.color)
        if label.terminology:
            terminology.setdefault(normalize_name(label.name), label.terminology)
    if classes:
        unknown = [c for c in classes if normalize_name(c) not in seen]
        kept = {normalize_name(name) for name in parent.names} if parent is not None else set()
        seen.update({normalize_name(c): c for c in unknown if normalize_name(c) in kept})
        unknown = [c for c in unknown if normalize_name(c) not in kept]
        if unknown:
            raise ValueError(f"classes not found in any case: {unknown}; available: {sorted(seen.values())[:20]}")
        names = [seen[normalize_name(c)] for c in classes]
    else:
        names = list(seen.values())
    return LabelTable.from_names(names, colors, terminology)


@dataclass
class PreparedCase:
    """image: float16 (C, X, Y, Z) in 0..1; label: uint8 (X, Y, Z) table values; present: bool (K + 1,)
    with present[c] True when class c is annotated in this case (background always True)."""

    name: str
    image: np.ndarray
    label: np.ndarray
    present: np.ndarray
    geometry: Geometry
    split: str


def _corners(image: sitk.Image) -> np.ndarray:
    """The 8 corner voxel centres in physical space, sorted (so flipped axes compare equal)."""
    size = image.GetSize()
    points = [image.TransformIndexToPhysicalPoint(tuple(c * (n - 1) for c, n in zip(corner, size))) for corner in np.ndindex(2, 2, 2)]
    return np.asarray(sorted(tuple(np.round(p, 3)) for p in points))


def _same_grid(image: sitk.Image, label: sitk.Image) -> str | None:
    """None when the label covers the image's voxels (axes may be stored flipped or permuted), else why not."""
    if sorted(image.GetSize()) != sorted(label.GetSize()):
        return f"label size {label.GetSize()} differs from image size {image.GetSize()}"
    distance = float(np.abs(_corners(image) - _corners(label)).max())
    if distance > GEOMETRY_TOLERANCE_MM:
        return f"label grid is {distance:.1f} mm away from the image grid"
    return None


def prepare_case(case: LabelledCase, labels: CaseLabels, table: LabelTable, intensity: IntensitySettings | tuple[IntensitySettings, ...],
                 spacing: tuple[float, float, float], roi: int, warn: Callable[[str, str], object] | None = None) -> PreparedCase:
    """Validates, resamples (image linear, labels nearest) onto a RAS grid and maps labels to the table.
    ``warn(file, reason)`` hears about usable but doubtful cases (e.g. a CT window on an image with no air).

    Raises:
        VolumeError: unreadable files, geometry mismatch, values without a name, no voxel of any class.
    """
    settings = (intensity,) if isinstance(intensity, IntensitySettings) else tuple(intensity)  # one setting, or one per channel
    image = read_volume(case.image, len(settings))
    if warn is not None and settings[0].preset == "ct":
        lowest = float(np.min(sitk.GetArrayViewFromImage(image)))
        if lowest > NO_AIR_HU:
            low, high = settings[0].window or CT_WINDOW
            warn(case.image.name, f"its lowest value is {lowest:g}, but CT has air near -1000 HU: if this is MR or PET, "
                                  f"give --preset mr or pet (the CT window {low:g}..{high:g} HU is used)")
    problem = _same_grid(image, labels.image)
    if problem:
        raise VolumeError(str(case.label), problem)
    values = {int(v) for v in np.unique(sitk.GetArrayViewFromImage(labels.image))} - {0}
    unnamed = sorted(values - set(labels.names))
    if unnamed:
        raise VolumeError(str(case.label), f"label values {unnamed[:10]} are not in its label table")
    lookup = np.zeros(max(values | set(labels.names) | {0}) + 1, dtype=np.uint8)
    present = np.zeros(table.num_classes, dtype=bool)
    present[0] = True
    for value, name in labels.names.items():
        target = table.value_of(name)
        if target is not None:
            lookup[value] = target
            present[target] = True
    grid = ras_grid(image, spacing)
    array = normalize_channels(image_to_array(resample_onto(image, grid)), intensity)
    label_image = sitk.Resample(labels.image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.image.GetPixelID())
    label = lookup[image_to_array(label_image)[0].astype(np.int64)]
    if not label.any():
        raise VolumeError(str(case.label), f"no voxel of the model's classes ({', '.join(table.names[:5])}...)")
    start, end = foreground_box(array, margin=4)
    box = tuple(slice(s, e) for s, e in zip(start, end))
    geometry = Geometry.of_image(grid).shifted(start)
    array = pad_to_size(array[(slice(None), *box)], (roi,) * 3)
    label = pad_to_size(label[None][(slice(None), *box)].astype(np.float32), (roi,) * 3)[0]
    return PreparedCase(case.name, array.astype(np.float16), np.rint(label).astype(np.uint8), present, geometry, case.split)

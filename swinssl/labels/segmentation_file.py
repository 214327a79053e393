"""Writing and reading label maps as Slicer ``.seg.nrrd`` (slicerio) or NIfTI + JSON label table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicerio

from swinssl.io.atomic import atomic_path, atomic_write_text
from swinssl.labels.table import LabelTable


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """4x4 matrix from (i, j, k) voxel indices to LPS millimetres."""
    matrix = np.eye(4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    matrix[:3, :3] = direction * np.asarray(image.GetSpacing())[None, :]
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def write_label_map(label_image: sitk.Image, table: LabelTable, path: Path) -> list[Path]:
    """Writes a label map (voxel value = label value) as ``.seg.nrrd`` or ``.nii(.gz)`` + ``.json``.

    The ``.seg.nrrd`` carries every segment's name, colour, label value and terminology (when
    known), so Slicer shows named, coloured segments. Returns the written paths.
    """
    name = path.name.lower()
    if name.endswith(".seg.nrrd"):
        voxels = np.transpose(sitk.GetArrayViewFromImage(label_image), (2, 1, 0)).astype(np.uint8 if len(table.labels) < 256 else np.uint16, copy=False)
        segments = []
        for label in table.labels:
            segment = {"id": f"Segment_{label.value}", "name": label.name, "labelValue": label.value, "layer": 0, "color": list(label.color)}
            if label.terminology:
                segment["terminology"] = label.terminology
            segments.append(segment)
        with atomic_path(path) as temporary:  # an existing file survives a full disk or a kill
            slicerio.write_segmentation(str(temporary), {"voxels": voxels, "ijkToLPS": ijk_to_lps(label_image), "segments": segments}, index_order="F")
        return [path]
    if name.endswith((".nii", ".nii.gz")):
        with atomic_path(path) as temporary:
            sitk.WriteImage(label_image, str(temporary), useCompression=True)
        table_path = label_table_path(path)
        atomic_write_text(table_path, json.dumps({"labels": table.to_list()}, indent=1))
        return [path, table_path]
    raise ValueError(f"{path}: output must end in .seg.nrrd, .nii or .nii.gz")


def label_table_path(path: Path) -> Path:
    """The JSON label table beside a label map: its name without ``.nii.gz`` / ``.nii`` (any case; else its last
    suffix) plus ``.json``, case and inner dots kept (``CASE.01.nii.gz`` -> ``CASE.01.json``)."""
    lower = path.name.lower()
    stem = path.name[: -len(".nii.gz")] if lower.endswith(".nii.gz") else path.name[: -len(".nii")] if lower.endswith(".nii") else path.stem
    return path.with_name(stem + ".json")


def read_seg_nrrd(path: Path) -> tuple[sitk.Image, dict[int, str], dict[str, tuple], dict[str, dict]]:
    """Reads a ``.seg.nrrd`` as one label map plus its segment names, colours and terminology.

    Overlapping segments (several layers) are merged in segment order, later ones on top.
    Returns (label image whose values are 1..n in segment order, {value: name}, colours, terminology).
    """
    segmentation = slicerio.read_segmentation(str(path))
    voxels = np.asarray(segmentation["voxels"])  # (I, J, K) or (layers, I, J, K)
    layers = voxels[None] if voxels.ndim == 3 else voxels
    labels = np.zeros(layers.shape[1:], np.uint16)
    names, colors, terminology = {}, {}, {}
    for index, segment in enumerate(segmentation["segments"], start=1):
        labels[layers[segment.get("layer", 0)] == segment["labelValue"]] = index
        names[index] = segment["name"]
        if "color" in segment:
            colors[segment["name"]] = tuple(segment["color"])
        if "terminology" in segment:
            terminology[segment["name"]] = segment["terminology"]
    image = sitk.GetImageFromArray(np.transpose(labels, (2, 1, 0)))
    matrix = np.asarray(segmentation["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(matrix[:3, 3]))
    image.SetDirection(tuple((matrix[:3, :3] / spacing[None, :]).ravel()))
    return image, names, colors, terminology

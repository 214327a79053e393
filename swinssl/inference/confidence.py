"""The confidence map of a segmentation: per voxel the largest softmax probability of the model's mean logits
(:func:`swinssl.inference.sliding_window.max_probability`), on the input's grid, and per segment its mean and the
share of its voxels below a threshold, so a reader sees where the model hesitates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from swinssl.io.atomic import atomic_path
from swinssl.labels.table import LabelTable
from swinssl.preprocessing.spatial import Geometry

DEFAULT_THRESHOLD = 0.6  # two classes tied give 0.5; below 0.6 another class is nearly as likely


def confidence_on_input_grid(confidence: np.ndarray, geometry: Geometry, reference: sitk.Image) -> sitk.Image:
    """(X, Y, Z) float32 confidence on the model grid -> float32 image on ``reference``'s exact grid (linear;
    1 outside the model grid, which holds only air, background by rule)."""
    image = geometry.to_image(confidence.astype(np.float32))
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 1.0, sitk.sitkFloat32)


def confidence_summary(labels: sitk.Image, confidence: sitk.Image, table: LabelTable, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """{segment name: {"mean": mean confidence over its voxels, "below": share of its voxels under ``threshold``}}
    for every segment with voxels; computed slice by slice (no whole-volume float64 copy)."""
    label_array = sitk.GetArrayViewFromImage(labels)  # (K, J, I)
    confidence_array = sitk.GetArrayViewFromImage(confidence)
    size = max(table.num_classes, int(label_array.max()) + 1)
    sums, counts, below = np.zeros(size), np.zeros(size, np.int64), np.zeros(size, np.int64)
    for label_slice, confidence_slice in zip(label_array, confidence_array):
        flat = label_slice.ravel()
        sums += np.bincount(flat, weights=confidence_slice.ravel(), minlength=size)
        counts += np.bincount(flat, minlength=size)
        below += np.bincount(flat[confidence_slice.ravel() < threshold], minlength=size)
    return {label.name: {"mean": round(float(sums[label.value] / counts[label.value]), 4),
                         "below": round(float(below[label.value] / counts[label.value]), 4)}
            for label in table.labels if counts[label.value]}


def write_confidence(confidence: sitk.Image, path: Path) -> Path:
    """Writes the float32 map (NRRD or NIfTI by suffix) atomically."""
    with atomic_path(path) as temporary:
        sitk.WriteImage(confidence, str(temporary), True)
    return path

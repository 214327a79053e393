"""Per-segment statistics as Slicer's Segment Statistics module computes them: segments put onto the intensity
volume's grid (``vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode``), then each one's voxel count,
volume in mL and the mean and standard deviation of the volume's values inside it. Qt-free: the web app and the
Slicer module show the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer
from vtkmodules.vtkCommonCore import vtkStringArray


@dataclass(frozen=True)
class SegmentStatistics:
    """One segment's figures on the intensity volume's grid; ``mean``/``sd`` are None for an empty segment."""

    segment_id: str
    name: str
    voxels: int
    volume_ml: float
    mean: float | None
    sd: float | None

    @property
    def empty(self) -> bool:
        return self.voxels == 0

    def line(self, unit: str = "") -> str:
        """"liver: 992.5 mL, 65 ± 21 HU" (``unit``: :func:`intensity_unit`); "kidney_left: EMPTY (no voxel)" for an empty segment."""
        if self.empty:
            return f"{self.name}: EMPTY (no voxel)"
        return f"{self.name}: {self.volume_ml:.1f} mL, {self.mean:.0f} ± {self.sd:.0f}" + (f" {unit}" if unit else "")


def intensity_unit(volume_node) -> str:
    """"HU" for a CT in Hounsfield units by the engine's rule (:func:`swinssl.inference.input_fit.modality_doubt`: air
    below -300 in more than 0.1 % of the voxels), else "" (MR and other intensities have no unit)."""
    from swinssl.inference.input_fit import CT_LOWEST_HU, CT_MIN_LOW_SHARE

    return "HU" if float(np.mean(slicer.util.arrayFromVolume(volume_node) < CT_LOWEST_HU)) > CT_MIN_LOW_SHARE else ""


def voxel_volume_ml(volume_node) -> float:
    spacing = volume_node.GetSpacing()
    return float(spacing[0] * spacing[1] * spacing[2]) / 1000.0


def segment_statistics(segmentation_node, volume_node, segment_ids: list[str] | None = None) -> list[SegmentStatistics]:
    """Statistics of ``segment_ids`` (default: every segment, in order) of ``segmentation_node`` over ``volume_node``
    (a scalar volume in the same scene). Segments that share a labelmap layer cannot overlap, so each layer is put on the
    volume's grid once (its segments as labels 1..n in the order given) and measured with one ``np.bincount``;
    overlapping segments lie in different layers and each keeps its voxels. Arrays from ``arrayFromVolume`` are (K, J, I)."""
    scene = volume_node.GetScene()
    segmentation = segmentation_node.GetSegmentation()
    ids = list(segment_ids) if segment_ids is not None else list(segmentation.GetSegmentIDs())
    intensities = slicer.util.arrayFromVolume(volume_node).astype(np.float64).ravel()
    per_voxel_ml = voxel_volume_ml(volume_node)
    layers: dict[int, list[str]] = {}
    for segment_id in ids:
        layers.setdefault(segmentation.GetLayerIndex(segment_id), []).append(segment_id)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SwinSSL statistics mask")
    found: dict[str, SegmentStatistics] = {}
    try:
        for layer_ids in layers.values():
            wanted = vtkStringArray()
            for segment_id in layer_ids:
                wanted.InsertNextValue(segment_id)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, wanted, labelmap, volume_node):
                raise RuntimeError(f"the segments of {segmentation_node.GetName()!r} could not be put on the grid of {volume_node.GetName()!r}")
            labels = slicer.util.arrayFromVolume(labelmap).ravel().astype(np.int64)
            bins = len(layer_ids) + 1
            counts = np.bincount(labels, minlength=bins)[:bins]
            sums = np.bincount(labels, weights=intensities, minlength=bins)[:bins]
            squares = np.bincount(labels, weights=intensities ** 2, minlength=bins)[:bins]
            for value, segment_id in enumerate(layer_ids, start=1):
                count = int(counts[value])
                mean = sums[value] / count if count else None
                sd = float(np.sqrt(max(squares[value] / count - mean ** 2, 0.0))) if count else None
                found[segment_id] = SegmentStatistics(segment_id, segmentation.GetSegment(segment_id).GetName(), count, count * per_voxel_ml,
                                                       None if mean is None else float(mean), sd)
        return [found[segment_id] for segment_id in ids]
    finally:
        scene.RemoveNode(labelmap)

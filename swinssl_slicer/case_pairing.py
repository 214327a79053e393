"""Whether a segmentation belongs to a volume before the two are saved as one training case.

A case pairs a volume with the segmentation drawn on it. Segmenting patient A, switching the input to patient B and
adding the case would save A's labels as B's (resampled onto B's grid: often empty organs that teach the model the
organ is absent). Slicer records where a segmentation was drawn: its reference image geometry and the volume that
geometry came from (``vtkMRMLSegmentationNode::SetReferenceImageGeometryParameterFromVolumeNode``, called by the
segment editor when a segmentation has none yet), and the subject hierarchy files both under a DICOM study.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer
import vtk


@dataclass(frozen=True)
class PairingProblem:
    """Why ``segmentation`` may not be ``volume``'s; ``same_grid``: on the volume's own grid, so the user may confirm it."""

    message: str
    same_grid: bool


class PairingError(ValueError):
    """Refused to save a segmentation as another volume's case; ``same_grid`` as in :class:`PairingProblem`."""

    def __init__(self, problem: PairingProblem) -> None:
        super().__init__(problem.message)
        self.same_grid = problem.same_grid


def volume_grid(volume) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The volume's IJK-to-RAS matrix (4x4) and image extent (6), in its local frame; None without image data."""
    image = volume.GetImageData()
    if image is None:
        return None
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return _array(matrix), tuple(image.GetExtent())


def segmentation_grid(segmentation) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The segmentation's reference image geometry (IJK-to-RAS 4x4, extent 6); None when it has none."""
    text = segmentation.GetSegmentation().GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    matrix, extent = vtk.vtkMatrix4x4(), [0, -1, 0, -1, 0, -1]
    if not text or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, matrix, extent):
        return None
    return _array(matrix), tuple(extent)


def same_grid(first, second) -> bool:
    """Two grids (:func:`volume_grid`, :func:`segmentation_grid`) with the same extent and matrix (to a micrometre)."""
    return first is not None and second is not None and first[1] == second[1] and np.allclose(first[0], second[0], atol=1e-3)


def study_of(node) -> int:
    """The subject-hierarchy study holding ``node`` (its item ID), 0 when it is in none."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    item = hierarchy.GetItemByDataNode(node)
    return hierarchy.GetItemAncestorAtLevel(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()) if item else 0


def pairing_problem(volume, segmentation) -> PairingProblem | None:
    """None when ``segmentation`` may be saved as ``volume``'s case; else what is wrong, naming both.

    Refused: the segmentation was drawn on another volume (its reference geometry's volume), or is filed under another
    study. Either can be confirmed by the user only when the segmentation lies on ``volume``'s own grid.
    """
    source = segmentation.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    grid = volume_grid(volume)
    if source is not None and source is not volume:
        on_grid = same_grid(volume_grid(source), grid)
        detail = "it lies on the same grid" if on_grid else "on another grid: its labels would not fall on this volume's anatomy"
        return PairingProblem(f"{segmentation.GetName()!r} was made on {source.GetName()!r}, not on {volume.GetName()!r} ({detail}); "
                              f"choose {source.GetName()!r} as the input, or the segmentation made on {volume.GetName()!r}", on_grid)
    studies = study_of(segmentation), study_of(volume)
    if all(studies) and studies[0] != studies[1]:
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(volume.GetScene())
        on_grid = same_grid(segmentation_grid(segmentation), grid)
        return PairingProblem(f"{segmentation.GetName()!r} is in study {hierarchy.GetItemName(studies[0])!r}, {volume.GetName()!r} in study "
                              f"{hierarchy.GetItemName(studies[1])!r}" + ("" if on_grid else " (and on another grid)")
                              + ": they are not one case", on_grid)
    return None


def _array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])

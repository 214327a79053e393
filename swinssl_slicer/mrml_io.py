"""MRML nodes to and from files through Slicer's own storage nodes (NRRD volumes, .seg.nrrd segmentations).

Volume arrays from ``slicer.util.arrayFromVolume`` are (K, J, I); geometry always travels through the
nodes' IJK-to-RAS matrices and the files' headers, never through arrays.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import slicer
import vtk

from swinssl_slicer.engine import ensure_engine_on_path

ensure_engine_on_path()

from swinssl.labels.anatomy import standard_anatomy, standard_name  # noqa: E402  (plain Python: the anatomy table)

MODEL_NAME_TAG = "SwinSSL.ModelName"  # a segment's name as the model spells it
ALGORITHM_TYPE_TAG, ALGORITHM_NAME_TAG = "DICOM.SegmentAlgorithmType", "DICOM.SegmentAlgorithmName"  # read by Slicer's DICOM SEG export


def _with_storage(node, storage_class: str, path: Path, write: bool, compress: bool = True) -> bool:
    scene = node.GetScene()
    storage = scene.AddNewNodeByClass(storage_class)
    try:
        storage.SetFileName(str(path))
        storage.SetUseCompression(int(compress))
        return bool(storage.WriteData(node) if write else storage.ReadData(node))
    finally:
        scene.RemoveNode(storage)


def write_volume(volume_node, path: Path, compress: bool = False) -> Path:
    """Writes a scalar volume node (with its IJK-to-RAS geometry) as NRRD/NIfTI; uncompressed by default
    (a file the engine reads at once is written several times faster without gzip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _with_storage(volume_node, "vtkMRMLVolumeArchetypeStorageNode", path, write=True, compress=compress):
        raise OSError(f"could not write volume {volume_node.GetName()!r} to {path}")
    return path


def read_volume(scene, path: Path, name: str, node=None):
    """Loads a volume file into ``node`` (a new scalar volume node when None), with default display."""
    node = node or scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    if not _with_storage(node, "vtkMRMLVolumeArchetypeStorageNode", path, write=False):
        raise OSError(f"could not read volume {path}")
    node.CreateDefaultDisplayNodes()
    return node


def write_segmentation(segmentation_node, path: Path, reference_volume=None) -> Path:
    """Writes a segmentation node as .seg.nrrd (segment names, colours, terminology kept), on the
    reference volume's grid when one is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    previous_reference = segmentation_node.GetNodeReferenceID(role)
    previous_parameters = slicer.vtkSegmentation()
    previous_parameters.CopyConversionParameters(segmentation_node.GetSegmentation())
    try:
        if reference_volume is not None:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        if not _with_storage(segmentation_node, "vtkMRMLSegmentationStorageNode", path, write=True):
            raise OSError(f"could not write segmentation {segmentation_node.GetName()!r} to {path}")
    finally:  # the user's segmentation keeps the geometry it is edited on
        segmentation_node.GetSegmentation().CopyConversionParameters(previous_parameters)
        segmentation_node.SetNodeReferenceID(role, previous_reference)
    return path


def read_segmentation(scene, path: Path, name: str, node=None, algorithm: str | None = None):
    """Loads a .seg.nrrd into ``node`` (new when None): segment names, colours and terminology from the file, then
    Slicer's standard ones for the anatomy it recognises (:func:`use_standard_anatomy`). ``algorithm``: the model
    that computed it, recorded in each segment as Slicer's DICOM SEG export reads it (an AUTOMATIC segment needs it)."""
    node = node or scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    if not _with_storage(node, "vtkMRMLSegmentationStorageNode", path, write=False):
        raise OSError(f"could not read segmentation {path}")
    use_standard_anatomy(node)
    if algorithm:
        segmentation = node.GetSegmentation()
        for index in range(segmentation.GetNumberOfSegments()):
            segmentation.GetNthSegment(index).SetTag(ALGORITHM_TYPE_TAG, "AUTOMATIC")
            segmentation.GetNthSegment(index).SetTag(ALGORITHM_NAME_TAG, algorithm)
    return node


def segment_algorithm(segmentation_node) -> str | None:
    """The model named in the first segment that records one (:func:`read_segmentation`'s ``algorithm``), else None."""
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        name = vtk.mutable("")
        if segmentation.GetNthSegment(index).GetTag(ALGORITHM_NAME_TAG, name) and str(name):
            return str(name)
    return None


def write_dicom_segmentation(segmentation_node, reference_volume, headers: list, path: Path, model: tuple[str, str] | None,
                             warn: Callable[[str], object] = lambda reason: None) -> Path | None:
    """Writes the segmentation, on ``reference_volume``'s grid, as a DICOM Segmentation of the DICOM series whose
    headers (:func:`swinssl.labels.dicom_seg.read_source_headers`) are ``headers``: segment names, colours and
    terminology as in the node (overlapping segments merged, later ones on top); SEMIAUTOMATIC by ``model`` (name,
    version: the model's result, which the user could correct), MANUAL when None. None when no segment holds a voxel.

    Raises:
        swinssl.labels.dicom_seg.DicomSegError: the volume is not on the series' grid.
        ValueError: two segments share a name.
    """
    from swinssl.labels.dicom_seg import write_dicom_seg  # highdicom: imported when a DICOM SEG is written
    from swinssl.labels.segmentation_file import read_seg_nrrd
    from swinssl.labels.table import LabelTable

    with tempfile.TemporaryDirectory(prefix="swinssl-dicom-seg-") as folder:
        image, names, colors, terminology = read_seg_nrrd(write_segmentation(segmentation_node, Path(folder) / "labels.seg.nrrd", reference_volume))
    table = LabelTable.from_names([names[value] for value in sorted(names)], colors, terminology)
    return write_dicom_seg(image, table, headers, path, model, "SEMIAUTOMATIC" if model else "MANUAL", warn=warn)


def use_standard_anatomy(segmentation_node) -> None:
    """Each segment whose name the anatomy table (:mod:`swinssl.labels.anatomy`) knows gets Slicer's name for it
    (what picking its terminology in Slicer gives: "left kidney" for a model's "Left Kideny"), its colour and its
    ``TerminologyEntry`` tag, which Slicer's DICOM SEG export turns into SNOMED CT codes. The tag's format
    (vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry: 7 parts joined by '~') and its name
    (vtkSegment::GetTerminologyEntryTagName) are the same in Slicer 5.8.1, 5.10.0 and 5.12.3. Every segment keeps
    the name the model gave it in its ``MODEL_NAME_TAG`` tag; other segments are left as they are."""
    from slicerio.segmentation import terminology_entry_to_string  # an engine requirement, as everything after a segmentation run

    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        model_name = segment.GetName()
        segment.SetTag(MODEL_NAME_TAG, model_name)
        known = standard_anatomy(model_name)
        if known is None:
            continue
        color, terminology = known
        segment.SetName(standard_name(model_name))
        segment.SetColor(*color)
        segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology_entry_to_string(terminology))


def nodes_by_class(scene, class_name: str) -> list:
    """Every node of ``class_name`` in ``scene``. The collection ``vtkMRMLScene::GetNodesByClass`` returns
    is owned by the caller ("You are responsible for deleting the returned collection", vtkMRMLScene.h):
    without the UnRegister it would keep every listed node alive."""
    collection = scene.GetNodesByClass(class_name)
    collection.UnRegister(None)
    return [collection.GetItemAsObject(index) for index in range(collection.GetNumberOfItems())]


def same_parent_transform(nodes: list) -> str | None:
    """The parent transform node ID all ``nodes`` share (None: none); ValueError when they differ. Files
    are written in each node's local frame, so nodes under different transforms would not line up."""
    transforms = {node.GetTransformNodeID() for node in nodes}
    if len(transforms) > 1:
        names = ", ".join(node.GetName() for node in nodes)
        raise ValueError(f"{names} are under different transforms: harden the transforms (Data module) first")
    return transforms.pop() if transforms else None


def segment_names(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def place_under_study(node, reference_node) -> None:
    """Puts ``node`` in the subject hierarchy folder (study) that holds ``reference_node``."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    reference_item = hierarchy.GetItemByDataNode(reference_node)
    parent = hierarchy.GetItemParent(reference_item) if reference_item else hierarchy.GetSceneItemID()
    item = hierarchy.GetItemByDataNode(node)  # Slicer's GUI creates items for new nodes; a bare scene does not
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


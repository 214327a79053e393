"""MRML nodes to and from files through Slicer's own storage nodes (NRRD volumes, .seg.nrrd segmentations).

Volume arrays from ``slicer.util.arrayFromVolume`` are (K, J, I); geometry always travels through the
nodes' IJK-to-RAS matrices and the files' headers, never through arrays.
"""

from __future__ import annotations

from pathlib import Path

import slicer


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


def read_segmentation(scene, path: Path, name: str, node=None):
    """Loads a .seg.nrrd into ``node`` (new when None); segment names, colours and terminology come from the file."""
    node = node or scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    if not _with_storage(node, "vtkMRMLSegmentationStorageNode", path, write=False):
        raise OSError(f"could not read segmentation {path}")
    return node


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


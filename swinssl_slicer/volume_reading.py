"""Volume files into an MRML scene the way the engine reads them: the engine's discovery (one volume per file,
one per DICOM SeriesInstanceUID) and its one reader check (:func:`swinssl.io.reader.read_volume`), then the checked
image as a scalar volume node. A face that opens files this way shows exactly what ``swinssl segment`` would read,
and refuses what it would refuse (truncated files, unevenly spaced DICOM slices, masks, constant volumes).

SimpleITK images are in LPS with (I, J, K) sizes; their arrays are (K, J, I). MRML is RAS: the IJK-to-RAS matrix is
``diag(-1, -1, 1) @ [direction @ diag(spacing) | origin]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import vtk
from vtkmodules.util.numpy_support import numpy_to_vtk

from swinssl_slicer.engine import ensure_engine_on_path

ensure_engine_on_path()

from swinssl.io.discovery import VolumeSource, find_volumes, volume_stem  # noqa: E402
from swinssl.io.reader import VolumeError, read_image, read_volume  # noqa: E402

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class CheckedVolume:
    """A volume the engine's reader accepted: its node name and image (LPS, one component); for a DICOM series,
    ``details`` from its header (:func:`dicom_details`)."""

    name: str
    image: sitk.Image
    details: str = ""
    source: VolumeSource | None = None  # where it was read from (a DICOM series: its files, for a DICOM SEG that references it)


SERIES_TAGS = {"number": "0020|0011", "description": "0008|103e", "modality": "0008|0060", "study_date": "0008|0020"}


def dicom_header(source: VolumeSource) -> dict[str, str]:
    """The tags that tell a user which series this is (SERIES_TAGS), from its first file's header; "" where absent.
    No patient identifier is read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(source.dicom_files()[0])
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else "" for key, tag in SERIES_TAGS.items()}


def dicom_series_name(header: dict[str, str]) -> str:
    """"<series number>: <series description>", as Slicer's DICOM module names a series."""
    description = header["description"] or "DICOM series"
    return f"{header['number']}: {description}" if header["number"] else description


def dicom_details(header: dict[str, str]) -> str:
    """"CT, study of 2022-12-08": the modality and study date the header has (the description is in the series name)."""
    date = header["study_date"]
    parts = [header["modality"], f"study of {date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 and date.isdigit() else date]
    return ", ".join(part for part in parts if part)


def read_checked_volumes(location: Path, label: str) -> list[CheckedVolume]:
    """Reads every volume in ``location`` (a file, or the files of one folder, sub-folders left out) as the engine does.

    Raises:
        ValueError: no volume in ``location``, or one that the engine refuses; the message names ``label``
            (for a folder) or the file, and the problem. Nothing is read into any scene.
    """
    try:
        sources, skipped = find_volumes([location], recursive=False)
    except RuntimeError as error:  # GDCM on an unreadable folder: its last line, without ITK's source paths
        raise ValueError(f"{label}: unreadable ({(str(error).strip().splitlines() or ['unknown error'])[-1]})") from None
    if not sources:
        reasons = "; ".join(f"{path.name}: {reason}" for path, reason in skipped)
        raise ValueError(f"{label}: no volume found (NIfTI, NRRD, MetaImage or a DICOM series)" + (f" ({reasons})" if reasons else ""))
    volumes = []
    for source in sources:
        shown = f"{label} (DICOM series {source.series_uid})" if source.is_dicom else source.path.name
        try:
            image = read_volume(source, in_channels=1)
        except VolumeError as error:
            raise ValueError(f"{shown}: {error.reason}") from None
        if source.is_dicom:
            header = dicom_header(source)
            volumes.append(CheckedVolume(dicom_series_name(header), image, dicom_details(header), source))
        else:
            volumes.append(CheckedVolume(volume_stem(source.path), image, source=source))
    return volumes


def ijk_to_ras(image: sitk.Image) -> vtk.vtkMatrix4x4:
    """The image's IJK-to-RAS matrix (its LPS geometry with the first two axes negated)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin())
    result = vtk.vtkMatrix4x4()
    result.DeepCopy(matrix.ravel().tolist())
    return result


def add_volume_node(scene, volume: CheckedVolume):
    """A new scalar volume node in ``scene`` holding a copy of ``volume``'s voxels, with default display."""
    image = volume.image
    voxels = sitk.GetArrayViewFromImage(image)  # (K, J, I): I varies fastest, as in vtkImageData
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(*image.GetSize())
    image_data.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(voxels).reshape(-1), deep=True))
    taken = scene.GetFirstNodeByName(volume.name) is not None  # GenerateUniqueName counts removed nodes too: case_1 on reopen
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(volume.name) if taken else volume.name)
    node.SetAndObserveImageData(image_data)
    node.SetIJKToRASMatrix(ijk_to_ras(image))
    node.CreateDefaultDisplayNodes()
    return node


def check_source_files(nodes: list) -> None:
    """Refuses volume nodes whose file the engine would refuse: Slicer reads a truncated ``.nii.gz`` with the missing
    voxels as 0 (and NIfTI NaNs as 0), so the file of each node read from one volume file goes through the engine's
    reader check (:func:`swinssl.io.reader.read_image`: it is read once more). Nodes without a file (DICOM series,
    volumes made in the scene) are left to the engine's check of the file it is given. ValueError names the file."""
    for node in nodes:
        storage = node.GetStorageNode() if node is not None else None
        if storage is None or storage.GetNumberOfFileNames() > 0 or not storage.GetFileName():
            continue  # no file, or a series of files (DICOM): read by the DICOM module's own checks
        path = Path(storage.GetFileName())
        if path.is_file():
            try:
                read_image(VolumeSource(path))
            except VolumeError as error:
                raise ValueError(f"{node.GetName()} ({path.name}): {error.reason}") from None

"""A label map computed on a DICOM series' grid, written as a DICOM Segmentation (highdicom, BINARY) that references
the series: one frame per slice and segment that holds voxels, each frame on its source slice's plane (position,
orientation and pixel spacing from the source header), each segment with its SNOMED CT category and type codes
(laterality as a type modifier), its colour, and the model as the algorithm. PACS, OHIF and Slicer's DICOM module
read it as segments of that series.

Only the source headers are read (no pixel data is decoded). Segments without a terminology entry get Slicer's
default codes (Tissue / Tissue, SCT 85756007), as an unnamed segment has in Slicer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from swinssl import __version__
from swinssl.io.atomic import atomic_path
from swinssl.labels.anatomy import standard_name
from swinssl.labels.table import Label, LabelTable

TISSUE = ["SCT", "85756007", "Tissue"]  # vtkSegment's default terminology (category and type)
POSITION_TOLERANCE_MM = 0.01
SERIES_NUMBER = 1000


class DicomSegError(ValueError):
    """The label map and the DICOM series do not fit together, or the series cannot be referenced."""


def _concept(code: list[str]) -> hd.sr.CodedConcept:
    scheme, value, meaning = code
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def segment_description(number: int, label: Label, algorithm_type: str, algorithm: hd.AlgorithmIdentificationSequence | None) -> hd.seg.SegmentDescription:
    """One segment: Slicer's standard name when the anatomy table knows ``label.name`` (the model's own spelling
    then goes into SegmentDescription), its codes from ``label.terminology`` (else Tissue), its colour as CIELab,
    how it was made (``algorithm_type`` AUTOMATIC, SEMIAUTOMATIC or MANUAL; ``algorithm`` None for MANUAL)."""
    terminology = label.terminology or {}
    name = standard_name(label.name) or label.name
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=name[:64],
        segmented_property_category=_concept(terminology.get("category", TISSUE)),
        segmented_property_type=_concept(terminology.get("type", TISSUE)),
        algorithm_type=algorithm_type, algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*(int(round(c * 255)) for c in label.color)))
    if terminology.get("typeModifier"):  # laterality: an attribute of the type's code item (PS3.3 C.8.20.2, Segment Description)
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [_concept(terminology["typeModifier"])]
    if name != label.name:
        description.SegmentDescription = label.name[:64]
    return description


def read_source_headers(files: list[str], warn: Callable[[str], object]) -> list[pydicom.Dataset]:
    """The series' headers (pixel data not read). De-identified series sometimes have empty UIDs: the SOP class and
    instance UIDs are taken from each file's meta header, and an empty study or series UID is replaced by one derived
    from the instance UIDs (the same for every export of that series); ``warn`` hears about it."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for header in headers:
        header.SOPClassUID = header.get("SOPClassUID") or header.file_meta.MediaStorageSOPClassUID
        header.SOPInstanceUID = header.get("SOPInstanceUID") or header.file_meta.MediaStorageSOPInstanceUID
    instances = sorted(str(h.SOPInstanceUID) for h in headers)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not all(h.get(keyword) for h in headers):
            uid = generate_uid(entropy_srcs=[keyword, *instances])
            warn(f"the DICOM series has no {keyword} (de-identified?); the segmentation references {uid}, derived from its "
                 "instance UIDs, so a PACS will not link it to the original study")
            for header in headers:
                setattr(header, keyword, uid)
    return headers


def slice_of_each_header(label_image: sitk.Image, headers: list[pydicom.Dataset]) -> list[int]:
    """The label map's slice index k (array axis 0 of GetArray, (K, J, I)) on which each header's plane lies.

    Raises:
        DicomSegError: a header's orientation, pixel spacing or position is not that of a slice of ``label_image``.
    """
    direction = np.asarray(label_image.GetDirection()).reshape(3, 3)
    spacing = np.asarray(label_image.GetSpacing())
    slices = []
    for header in headers:
        orientation = np.asarray(header.ImageOrientationPatient, float)
        row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)  # between rows (along j), between columns (along i)
        if (not np.allclose(orientation, np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-4)
                or not np.allclose([column_spacing, row_spacing], spacing[:2], rtol=1e-4)
                or (int(header.Columns), int(header.Rows)) != label_image.GetSize()[:2]):
            raise DicomSegError(f"slice {header.SOPInstanceUID} is not on the segmentation's grid (orientation, pixel spacing or size)")
        index = np.asarray(label_image.TransformPhysicalPointToContinuousIndex([float(v) for v in header.ImagePositionPatient]))
        k = int(round(index[2]))
        if np.abs(index - [0, 0, k]).max() * spacing.min() > POSITION_TOLERANCE_MM or not 0 <= k < label_image.GetSize()[2]:
            raise DicomSegError(f"slice {header.SOPInstanceUID} at {list(header.ImagePositionPatient)} mm is not a slice of the segmentation")
        slices.append(k)
    if len(set(slices)) != len(slices):
        raise DicomSegError("two files of the series lie on the same slice; give a folder with one series")
    return slices


def write_dicom_seg(label_image: sitk.Image, table: LabelTable, headers: list[pydicom.Dataset], path: Path, model: tuple[str, str] | None,
                    algorithm_type: str = "AUTOMATIC", warn: Callable[[str], object] = lambda reason: None) -> Path | None:
    """Writes ``label_image`` (voxel value = label value of ``table``, on the exact grid of the DICOM series whose
    :func:`read_source_headers` are ``headers``) as a DICOM Segmentation at ``path``; ``model`` (name, version) made it
    (``algorithm_type`` AUTOMATIC, or SEMIAUTOMATIC once a user corrected it), None for MANUAL. Segments that hold no
    voxel are left out (a SEG segment needs frames); with none left nothing is written, ``warn`` says so and None is
    returned.

    Raises:
        DicomSegError: the label map is not on the series' grid.
    """
    slices = slice_of_each_header(label_image, headers)
    array = sitk.GetArrayViewFromImage(label_image)  # (K, J, I) = (slices, rows, columns)
    present = [label for label in table.labels if (array == label.value).any()]
    if not present:
        warn(f"no segment holds a voxel: no DICOM Segmentation written to {path}")
        return None
    renumber = np.zeros(max(int(array.max()), table.num_classes) + 1, np.uint8 if len(present) < 256 else np.uint16)
    for number, label in enumerate(present, start=1):
        renumber[label.value] = number
    frames = renumber[np.asarray(array)[slices]]  # (files, rows, columns): segment number per pixel, in header order
    name, version = model or ("SwinSSL", "")
    algorithm = (hd.AlgorithmIdentificationSequence(name=name[:64], version=version[:64] or "unknown", family=codes.cid7162.ArtificialIntelligence)
                 if model else None)
    segmentation = hd.seg.Segmentation(
        source_images=headers, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(number, label, algorithm_type, algorithm) for number, label in enumerate(present, start=1)],
        series_instance_uid=hd.UID(), series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="SwinSSL", manufacturer_model_name=name[:64], software_versions=__version__, device_serial_number="0",
        series_description=f"{name} segmentation"[:64], content_label="SWINSSL", content_description=f"{name} {version}".strip()[:64])
    with atomic_path(path) as temporary:  # an existing file survives a full disk or a kill
        segmentation.save_as(str(temporary))
    return path

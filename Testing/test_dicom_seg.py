"""DICOM Segmentation output (swinssl.labels.dicom_seg) on the real JPEG-2000 CT series of ../shared/data, read back
with highdicom and pydicom: frames, per-frame geometry against the source headers, segment codes, references, voxels."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import run_cli
from swinssl.io.discovery import find_volumes
from swinssl.labels.dicom_seg import DicomSegError, read_source_headers, write_dicom_seg
from swinssl.labels.table import LabelTable

# TotalSegmentator values of the series' pseudo-labels (totalsegmentator_label_names.json) -> names as models spell them
PSEUDO_LABELS = {5: "liver", 1: "spleen", 8: "adrenal_gland_right", 63: "inferior_vena_cava", 64: "portal_vein_and_splenic_vein"}
ABSENT = "Left Kideny"  # sic (the BTCV bundle's spelling); no voxel in this series


def _series_files(folder: Path) -> list[str]:
    sources, _ = find_volumes([folder])
    return sources[0].dicom_files()


@pytest.fixture(scope="module")
def case(shared_data, tmp_path_factory):
    """(series folder with its UIDs filled in, its files, CT image, label image on its grid, table). The shared series is
    de-identified down to empty study/series/instance UIDs; this copy carries UIDs as a hospital's series does."""
    folder = tmp_path_factory.mktemp("series")
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for source in _series_files(shared_data / "ct" / "abdomen_ct_dicom_series"):
        dataset = pydicom.dcmread(source)  # the JPEG-2000 pixel data is copied as it is, never decoded
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPClassUID, dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPClassUID, dataset.file_meta.MediaStorageSOPInstanceUID
        dataset.save_as(folder / Path(source).name)
    files = _series_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    image = reader.Execute()
    pseudo = sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_dicom_series_labels.nii.gz"))  # stored with J flipped
    pseudo = sitk.GetArrayFromImage(sitk.Resample(pseudo, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    table = LabelTable.from_names([*PSEUDO_LABELS.values(), ABSENT])
    labels = np.zeros(pseudo.shape, np.uint8)  # (K, J, I)
    for value, name in PSEUDO_LABELS.items():
        labels[pseudo == value] = table.value_of(name)
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    return folder, files, label_image, table, (study, series)


def test_dicom_seg_of_the_real_series_reads_back_with_its_geometry_codes_references_and_voxels(case, tmp_path):
    folder, files, label_image, table, (study, series) = case
    warnings = []
    path = write_dicom_seg(label_image, table, read_source_headers(files, warnings.append), tmp_path / "organs.dcm", ("demo-organs", "1.0"),
                           warn=warnings.append)
    assert warnings == []
    seg = hd.seg.segread(path)
    headers = {h.SOPInstanceUID: h for h in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)}
    labels = sitk.GetArrayFromImage(label_image)  # (K, J, I); slice k is files[k] (GDCM's order along the normal)

    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == study and seg.FrameOfReferenceUID == headers[next(iter(headers))].FrameOfReferenceUID
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [series]
    assert {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} <= set(headers)

    # one frame per (segment, slice holding it); the left kidney holds no voxel and is left out
    present = [label for label in table.labels if label.name != ABSENT]
    expected_frames = sum(int((labels == label.value).any(axis=(1, 2)).sum()) for label in present)
    assert int(seg.NumberOfFrames) == expected_frames == len(seg.PerFrameFunctionalGroupsSequence)

    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = headers[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient, source.ImagePositionPatient, atol=1e-4)
    assert np.allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient, next(iter(headers.values())).ImageOrientationPatient)
    assert np.allclose(shared.PixelMeasuresSequence[0].PixelSpacing, next(iter(headers.values())).PixelSpacing)
    assert (int(seg.Rows), int(seg.Columns)) == (512, 512)

    segments = {s.SegmentNumber: s for s in seg.SegmentSequence}
    assert [s.SegmentLabel for s in segments.values()] == ["liver", "spleen", "right adrenal gland", "Inferior vena cava",
                                                           "portal_vein_and_splenic_vein"]  # Slicer's names where the anatomy table knows them
    types = [(s.SegmentedPropertyCategoryCodeSequence[0].CodeValue, s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for s in segments.values()]
    assert types == [("123037004", "10200004"), ("123037004", "78961009"), ("123037004", "23451007"), ("123037004", "64131007"),
                     ("85756007", "85756007")]  # SNOMED CT; an unknown name gets Slicer's default Tissue / Tissue
    adrenal = segments[3]
    modifier = adrenal.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert (modifier.CodingSchemeDesignator, modifier.CodeValue, modifier.CodeMeaning) == ("SCT", "24028007", "Right")
    assert adrenal.SegmentDescription == "adrenal_gland_right"  # the model's own spelling is kept
    assert all(s.SegmentAlgorithmType == "AUTOMATIC" and s.SegmentAlgorithmName == "demo-organs" for s in segments.values())
    assert segments[1].RecommendedDisplayCIELabValue  # the segment's colour travels

    # voxels: every source slice's label map read back from the SEG equals the one written (segment numbers 1..5)
    numbers = {label.value: number for number, label in enumerate(present, start=1)}
    expected = np.zeros_like(labels)
    for value, number in numbers.items():
        expected[labels == value] = number
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    back = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    assert back.shape == labels.shape and np.array_equal(back, expected)


def test_a_de_identified_series_without_uids_is_referenced_by_derived_uids_and_says_so(case, shared_data, tmp_path):
    """The shared series has empty study, series and instance UIDs: the instances are referenced by their file meta
    UIDs, study and series by UIDs derived from them (the same on every export), and the warnings say so."""
    _, _, label_image, table, _ = case
    files = _series_files(shared_data / "ct" / "abdomen_ct_dicom_series")
    warnings = []
    first = hd.seg.segread(write_dicom_seg(label_image, table, read_source_headers(files, warnings.append), tmp_path / "a.dcm", ("demo-organs", "1.0")))
    again = hd.seg.segread(write_dicom_seg(label_image, table, read_source_headers(files, print), tmp_path / "b.dcm", ("demo-organs", "1.0")))
    assert len(warnings) == 2 and "no StudyInstanceUID" in warnings[0] and "no SeriesInstanceUID" in warnings[1]
    assert first.ReferencedSeriesSequence[0].SeriesInstanceUID == again.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert first.StudyInstanceUID == again.StudyInstanceUID and first.SeriesInstanceUID != again.SeriesInstanceUID
    meta = {pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID for f in files}
    assert {i.ReferencedSOPInstanceUID for i in first.ReferencedSeriesSequence[0].ReferencedInstanceSequence} <= meta


def test_a_label_map_off_the_series_grid_is_refused(case, tmp_path):
    _, files, label_image, table, _ = case
    shifted = sitk.Image(label_image)
    shifted.SetOrigin(np.add(label_image.GetOrigin(), (0, 0, 0.5)).tolist())  # a quarter of a 2 mm slice off
    with pytest.raises(DicomSegError, match="is not a slice of the segmentation"):
        write_dicom_seg(shifted, table, read_source_headers(files, print), tmp_path / "x.dcm", ("demo-organs", "1.0"))
    assert not (tmp_path / "x.dcm").exists()


def test_dicom_seg_of_a_file_input_is_refused_before_torch_loads(tmp_path, shared_data):
    result = run_cli("segment", "--model", str(Path(__file__).parents[1] / "swinssl" / "resources" / "demo_organs"),
                     "--input", str(shared_data / "ct" / "abdomen_ct_3mm.nii.gz"), "--output", str(tmp_path / "o.seg.nrrd"),
                     "--dicom-seg", str(tmp_path / "o.dcm"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "abdomen_ct_3mm.nii.gz is not a DICOM series folder" in result.stderr and not (tmp_path / "o.seg.nrrd").exists()


def test_a_segmentation_node_on_a_dicom_volume_is_written_as_the_web_app_downloads_it(case, tmp_path, mrml_scene):
    """The web app's "Download DICOM SEG", below its page: the series read as the faces read it (a volume node), the
    engine's result loaded as the faces load it (Slicer's names, the model recorded), then written from the node."""
    from swinssl.labels.segmentation_file import write_label_map
    from swinssl_slicer.mrml_io import read_segmentation, segment_algorithm, write_dicom_segmentation
    from swinssl_slicer.volume_reading import add_volume_node, read_checked_volumes

    folder, files, label_image, table, (study, series) = case
    [checked] = read_checked_volumes(folder, "series")
    volume = add_volume_node(mrml_scene, checked)
    result = read_segmentation(mrml_scene, write_label_map(label_image, table, tmp_path / "result.seg.nrrd")[0], "result", algorithm="demo-organs")
    assert segment_algorithm(result) == "demo-organs"
    headers = read_source_headers(checked.source.dicom_files(), print)
    seg = hd.seg.segread(write_dicom_segmentation(result, volume, headers, tmp_path / "web.dcm", ("demo-organs", "1.0")))

    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [series] and seg.StudyInstanceUID == study
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen", "right adrenal gland", "Inferior vena cava",
                                                            "portal_vein_and_splenic_vein"]
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}  # the model's result, open to the user's corrections
    assert seg.SegmentSequence[2].SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "24028007"
    labels = sitk.GetArrayFromImage(label_image)
    expected = np.zeros_like(labels)
    for number, value in enumerate([table.value_of(name) for name in PSEUDO_LABELS.values()], start=1):
        expected[labels == value] = number
    back = seg.get_pixels_by_source_instance([str(h.SOPInstanceUID) for h in headers], combine_segments=True, assert_missing_frames_are_empty=True)
    assert np.array_equal(back, expected)

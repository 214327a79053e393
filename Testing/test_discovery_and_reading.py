"""Finding volumes in folders (files and DICOM series) and refusing unusable files by name."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import phantom_ct, write_volume
from swinssl.io.discovery import VolumeSource, find_volumes
from swinssl.io.reader import VolumeError
from swinssl.preprocessing.cache import PrepSettings, prepare_volume


def write_dicom_series(folder: Path, array_kji: np.ndarray, series_uid: str, spacing=(0.8, 0.8, 2.0)) -> None:
    """Writes one CT slice file per k with its own position and the given SeriesInstanceUID."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, slice_ji in enumerate(array_kji):
        image = sitk.GetImageFromArray(slice_ji[None].astype(np.int16))
        image.SetSpacing(spacing)
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{k * spacing[2]}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
        }.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{series_uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(image)


def test_finds_every_format_recursively_and_splits_dicom_series(tmp_path):
    volume = phantom_ct((12, 16, 16))
    write_volume(tmp_path / "a" / "case1.nii.gz", volume)
    write_volume(tmp_path / "a" / "b" / "case2.nrrd", volume)
    write_volume(tmp_path / "case3.mha", volume)
    write_volume(tmp_path / "case1_label.nii.gz", (volume > 0).astype(np.uint8))
    write_volume(tmp_path / "case4.seg.nrrd", (volume > 0).astype(np.uint8))
    write_dicom_series(tmp_path / "dicom", volume[:6], "1.2.826.0.1.3680043.2.1125.101")
    write_dicom_series(tmp_path / "dicom", volume[6:], "1.2.826.0.1.3680043.2.1125.202")
    sources, skipped = find_volumes([tmp_path])
    files = sorted(s.path.name for s in sources if not s.is_dicom)
    series = sorted(s.series_uid for s in sources if s.is_dicom)
    assert files == ["case1.nii.gz", "case2.nrrd", "case3.mha"]
    assert series == ["1.2.826.0.1.3680043.2.1125.101", "1.2.826.0.1.3680043.2.1125.202"]
    assert sorted(p.name for p, _ in skipped) == ["case1_label.nii.gz", "case4.seg.nrrd"]
    dicom = next(s for s in sources if s.is_dicom and s.series_uid.endswith("101"))
    array, geometry = prepare_volume(dicom, PrepSettings(min_size=(1, 1, 1), crop_foreground=False))
    assert array.shape == (1, 16, 16, 6)
    assert geometry.spacing == pytest.approx((0.8, 0.8, 2.0))


def test_real_dicom_series_is_found_and_read(shared_data):
    sources, _ = find_volumes([shared_data / "ct" / "abdomen_ct_dicom_series"])
    assert len(sources) == 1 and sources[0].is_dicom
    array, geometry = prepare_volume(sources[0], PrepSettings(min_size=(1, 1, 1), crop_foreground=False))
    assert array.shape == (1, 512, 512, 20)
    assert geometry.spacing[2] == pytest.approx(2.0, abs=0.05)


def test_missing_data_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_volumes([tmp_path / "nowhere"])


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("corrupt.nii.gz", lambda p: p.write_bytes(b"\x1f\x8bnot really gzip"), "unreadable"),
        ("flat.nrrd", lambda p: write_volume(p, np.zeros((1, 20, 20), np.int16) + np.arange(20, dtype=np.int16)), "degenerate size"),
        ("two_d.png", None, "2-D image"),
        ("empty.nii.gz", lambda p: write_volume(p, np.full((8, 8, 8), 7, np.int16)), "empty volume"),
        ("nan.nrrd", lambda p: write_volume(p, np.where(np.indices((8, 8, 8))[0] > 3, np.nan, 1.0).astype(np.float32)), "NaN"),
        ("mask.nii.gz", lambda p: write_volume(p, (np.indices((8, 8, 8))[0] > 3).astype(np.uint8)), "binary mask"),
    ],
)
def test_bad_files_raise_an_error_naming_file_and_reason(tmp_path, name, make, reason):
    path = tmp_path / name
    if make is None:  # a genuine 2-D image file
        sitk.WriteImage(sitk.GetImageFromArray(np.arange(64, dtype=np.uint8).reshape(8, 8)), str(path))
    else:
        make(path)
    with pytest.raises(VolumeError) as error:
        prepare_volume(VolumeSource(path), PrepSettings(min_size=(8, 8, 8)))
    assert str(path) in str(error.value) and reason in str(error.value)


def test_four_d_images_need_the_right_number_of_channels(tmp_path):
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(phantom_ct((8, 10, 12), seed=s).astype(np.float32)) for s in (0, 1)])
    path = tmp_path / "two_channel.nii.gz"
    sitk.WriteImage(four_d, str(path))
    with pytest.raises(VolumeError, match="4-D image with 2 volumes"):
        prepare_volume(VolumeSource(path), PrepSettings(min_size=(8, 8, 8), in_channels=1))
    array, _ = prepare_volume(VolumeSource(path), PrepSettings(min_size=(8, 8, 8), in_channels=2, crop_foreground=False))
    assert array.shape == (2, 12, 10, 8)

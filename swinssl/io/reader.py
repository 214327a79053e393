"""Reading and validating one volume with SimpleITK: the one check every command uses (pretrain, finetune,
segment, align, evaluate)."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import SimpleITK as sitk

from swinssl.io.discovery import VolumeSource

# ITK prints its warnings (e.g. "Non uniform sampling or missing slices detected") to the terminal with
# C++ file names; the checks below turn what matters into messages that name the file.
sitk.ProcessObject.SetGlobalWarningDisplay(False)
NON_UNIFORM_KEY = "ITK_non_uniform_sampling_deviation"  # set by itk::ImageSeriesReader on uneven slice positions
NON_UNIFORM_TOLERANCE = 0.1  # largest accepted deviation, as a share of the slice spacing
GZIP_CHUNK = 16 << 20


class VolumeError(ValueError):
    """A volume that cannot be used; the message names the file and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def check_gzip_stream(path) -> None:
    """A truncated ``.gz`` (an interrupted copy) is read by ITK without error, the missing voxels as 0:
    decompressing the whole stream finds the early end."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(GZIP_CHUNK):
                pass
    except (EOFError, OSError, zlib.error) as error:
        raise VolumeError(str(path), f"unreadable: truncated or corrupt compressed file ({error})") from error


def check_nifti_nan(path) -> None:
    """ITK's NIfTI reader turns NaN voxels into 0 (water, in a CT): nibabel reads the stored values."""
    import nibabel

    nan_count = int(np.isnan(np.asanyarray(nibabel.load(str(path)).dataobj)).sum())
    if nan_count:
        raise VolumeError(str(path), f"{nan_count} voxels are NaN (not a number)")


def slice_steps(files: list[str], image: sitk.Image) -> np.ndarray:
    """Distances (mm) between consecutive DICOM slices along the slice normal (Image Position Patient)."""
    normal = np.asarray(image.GetDirection()).reshape(3, 3)[:, 2]
    reader = sitk.ImageFileReader()
    positions = []
    for name in files:
        reader.SetFileName(name)
        reader.ReadImageInformation()
        positions.append(float(np.dot(normal, [float(v) for v in reader.GetMetaData("0020|0032").split("\\")])))
    return np.abs(np.diff(np.sort(positions)))


def read_image(source: VolumeSource) -> sitk.Image:
    """Reads a file or DICOM series as a SimpleITK image. Refuses truncated compressed files and DICOM
    series whose slices are unevenly spaced (missing slices): ITK would place them as if evenly spaced."""
    if not source.is_dicom and source.path.name.lower().endswith(".gz"):
        check_gzip_stream(source.path)
    try:
        if source.is_dicom:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(source.dicom_files())
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(source.path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reader error"
        raise VolumeError(source.name, f"unreadable ({first_line})") from error
    if source.path.name.lower().endswith((".nii", ".nii.gz")) and "float" in image.GetPixelIDTypeAsString():
        check_nifti_nan(source.path)
    if image.HasMetaDataKey(NON_UNIFORM_KEY):  # ITK's own figure is not readable from Python: measure it
        steps = slice_steps(source.dicom_files(), image)
        deviation, spacing = float(np.abs(steps - np.median(steps)).max()), float(np.median(steps))
        if deviation > NON_UNIFORM_TOLERANCE * spacing:
            raise VolumeError(source.name, f"slices are unevenly spaced (up to {deviation:.2f} mm off a {spacing:.2f} mm step: "
                                           "missing slices?); read evenly spaced, positions would be wrong, so it is not used")
    return image


def as_channel_image(image: sitk.Image, source_name: str, in_channels: int) -> sitk.Image:
    """Returns a 3-D image with ``in_channels`` components per voxel, or raises :class:`VolumeError`.

    Accepts 3-D scalar images (one channel), 3-D vector images and 4-D images whose 4th axis
    holds the channels.
    """
    dimension = image.GetDimension()
    if dimension == 2:
        raise VolumeError(source_name, f"2-D image of size {image.GetSize()}; a 3-D volume is needed")
    if dimension == 4:
        channels = image.GetSize()[3]
        if channels != in_channels:
            raise VolumeError(source_name, f"4-D image with {channels} volumes on its 4th axis; the model takes {in_channels} channel(s)")
        size = list(image.GetSize()[:3]) + [0]
        parts = [sitk.Extract(image, size, [0, 0, 0, c]) for c in range(channels)]
        image = parts[0] if channels == 1 else sitk.Compose(parts)
    elif dimension != 3:
        raise VolumeError(source_name, f"{dimension}-D image; a 3-D volume is needed")
    components = image.GetNumberOfComponentsPerPixel()
    if components != in_channels:
        raise VolumeError(source_name, f"{components} channel(s) per voxel; the model takes {in_channels}")
    if min(image.GetSize()) < 2:
        raise VolumeError(source_name, f"degenerate size {image.GetSize()}; a 3-D volume is needed")
    return image


def check_values(array: np.ndarray, source_name: str, integer_pixels: bool) -> None:
    """Raises :class:`VolumeError` for empty, constant, NaN-containing or binary-mask arrays.

    ``integer_pixels`` tells whether the file stores integers (a 0/1 integer volume is a mask).
    """
    if array.size == 0:
        raise VolumeError(source_name, "empty volume (no voxels)")
    nan_count = int(np.isnan(array).sum()) if np.issubdtype(array.dtype, np.floating) else 0
    if nan_count:
        raise VolumeError(source_name, f"{nan_count} of {array.size} voxels are NaN")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise VolumeError(source_name, "contains infinite values")
    low, high = array.min(), array.max()
    if low == high:
        raise VolumeError(source_name, f"empty volume (every voxel is {low})")
    if integer_pixels and low >= 0 and high <= 1:
        raise VolumeError(source_name, "binary mask (values 0/1 only), not an image")


def read_volume(source: VolumeSource, in_channels: int) -> sitk.Image:
    """Reads ``source`` as a 3-D image with ``in_channels`` components and validates its values.

    Raises:
        VolumeError: unreadable, wrong dimension or channel count, degenerate, empty, constant,
            NaN-containing or binary-mask volumes; the message names the file.
    """
    image = as_channel_image(read_image(source), source.name, in_channels)
    check_values(sitk.GetArrayViewFromImage(image), source.name, integer_pixels="integer" in image.GetPixelIDTypeAsString())
    return image

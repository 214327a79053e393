"""Reading and validating one volume with SimpleITK."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from swinssl.io.discovery import VolumeSource


class VolumeError(ValueError):
    """A volume that cannot be used; the message names the file and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def read_image(source: VolumeSource) -> sitk.Image:
    """Reads a file or DICOM series as a SimpleITK image (no validation)."""
    try:
        if source.is_dicom:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(source.dicom_files())
            return reader.Execute()
        return sitk.ReadImage(str(source.path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reader error"
        raise VolumeError(source.name, f"unreadable ({first_line})") from error


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

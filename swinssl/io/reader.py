"""Reading and validating one volume with SimpleITK: the one check every command uses (pretrain, finetune,
segment, align, evaluate)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from swinssl.io.discovery import VolumeSource

# ITK prints its warnings (e.g. "Non uniform sampling or missing slices detected") to the terminal with
# C++ file names; the checks below turn what matters into messages that name the file.
sitk.ProcessObject.SetGlobalWarningDisplay(False)
NON_UNIFORM_KEY = "ITK_non_uniform_sampling_deviation"  # set by itk::ImageSeriesReader on uneven slice positions
NON_UNIFORM_TOLERANCE = 0.1  # largest accepted deviation, as a share of the slice spacing
GZIP_CHUNK = 16 << 20
# A label map (an atlas, a segmentation result) stores few integer values in flat regions: in the real label maps
# of ../shared/data 94-99 % of neighbouring foreground voxels along an axis hold the same value, in the real CT
# and MR images (the uint8 Colin27 T1 included, 249 values) 2-13 %.
LABEL_MAP_MAX_VALUES = 1000  # more distinct integers than this: an image (atlases have tens to hundreds of labels)
LABEL_MAP_FLAT_SHARE = 0.8  # share of equal neighbours (foreground, along I) from which an integer volume is a label map
SEGMENTATION_HEADER_KEY = "Segment0_ID"  # written by Slicer into every .seg.nrrd
NIFTI_INTENT_LABEL = "1002"  # NIFTI_INTENT_LABEL: the file says its values are labels
MAX_EXTENT_MM = 2500.0  # no scanner images a body wider or longer than this: a larger extent is a wrong spacing


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
    check_not_segmentation(image, source_name)
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
    check_extent(image.GetSize()[:3], image.GetSpacing()[:3], source_name)
    return image


def check_not_segmentation(header: sitk.Image | sitk.ImageFileReader, source_name: str) -> None:
    """Raises :class:`VolumeError` when the header (of an image, or of a reader that read the information only)
    says the file holds labels: a Slicer segmentation (``Segment0_*`` keys) or a NIfTI of intent NIFTI_INTENT_LABEL."""
    if header.HasMetaDataKey(SEGMENTATION_HEADER_KEY):
        raise VolumeError(source_name, "a segmentation (its header lists segments), not an image: give the image it was drawn on")
    if header.HasMetaDataKey("intent_code") and header.GetMetaData("intent_code").strip() == NIFTI_INTENT_LABEL:
        raise VolumeError(source_name, "a label map (its NIfTI header says so), not an image: give the image it labels")


def check_extent(size: tuple[int, ...], spacing: tuple[float, ...], source_name: str) -> None:
    """Raises :class:`VolumeError` when the physical size (voxels x spacing, per axis) is wider than
    :data:`MAX_EXTENT_MM`: a wrong spacing in the header, which would also make resampling ask for terabytes
    (ITK's "Failed to allocate memory"). Smaller doubts about spacing are the segment input check's
    (:mod:`swinssl.inference.input_fit`)."""
    extent = [n * s for n, s in zip(size, spacing)]
    if max(extent) > MAX_EXTENT_MM:
        raise VolumeError(source_name, f"{' x '.join(f'{e:.4g}' for e in extent)} mm across (spacing {' x '.join(f'{s:.4g}' for s in spacing)} mm): "
                                       "no scan is that large; the spacing in its header is wrong (metres or microns for millimetres?)")


def check_header(path: Path) -> None:
    """The checks a file's header alone allows (a segmentation or label-map header, an impossible size), done
    before any voxel is read or torch is imported; DICOM folders are checked when read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # unreadable: said with the reason when it is read
    check_not_segmentation(reader, str(path))
    check_extent(reader.GetSize()[:3], reader.GetSpacing()[:3], str(path))


def check_values(array: np.ndarray, source_name: str, integer_pixels: bool) -> None:
    """Raises :class:`VolumeError` for empty, constant, NaN-containing, binary-mask or label-map arrays (K, J, I).

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
    if integer_pixels and low >= 0 and array.ndim == 3:
        labels = label_map_values(array)
        if labels is not None:
            raise VolumeError(source_name, f"a label map ({labels} integer values in flat regions, as an atlas or a segmentation "
                                           "result), not an image: give the image it labels")


def label_map_values(array: np.ndarray) -> int | None:
    """The number of distinct values when a non-negative integer (K, J, I) array looks like a label map, else None.

    A label map has at most :data:`LABEL_MAP_MAX_VALUES` values, and most neighbouring foreground voxels (along I)
    hold the same value (:data:`LABEL_MAP_FLAT_SHARE`); the images of every modality have noise and gradients.
    """
    if int(array.max()) <= 65535:  # counting is linear; np.unique would sort
        count = int(np.count_nonzero(np.bincount(array.ravel().astype(np.int64, copy=False))))
    else:
        count = len(np.unique(array))
    if count > LABEL_MAP_MAX_VALUES:
        return None
    left, right = array[..., :-1], array[..., 1:]
    both = (left != 0) & (right != 0)
    pairs = int(both.sum())
    if pairs == 0:
        return None
    return count if int((both & (left == right)).sum()) >= LABEL_MAP_FLAT_SHARE * pairs else None


def read_volume(source: VolumeSource, in_channels: int) -> sitk.Image:
    """Reads ``source`` as a 3-D image with ``in_channels`` components and validates its values.

    Raises:
        VolumeError: unreadable, wrong dimension or channel count, degenerate, impossibly large, empty, constant,
            NaN-containing, binary-mask or label-map volumes (segmentations too); the message names the file.
    """
    image = as_channel_image(read_image(source), source.name, in_channels)
    check_values(sitk.GetArrayViewFromImage(image), source.name, integer_pixels="integer" in image.GetPixelIDTypeAsString())
    return image

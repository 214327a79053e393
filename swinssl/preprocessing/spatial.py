"""Orientation, resampling, foreground crop and padding, keeping track of physical geometry.

Arrays here are channel-first ``(C, X, Y, Z)``: X, Y, Z are the image's i, j, k index axes, the
transpose of SimpleITK's ``(Z, Y, X)`` = (K, J, I) numpy order. After :func:`orient_ras`, i points
to the patient's right, j to anterior and k to superior (axial slices are ``array[..., k]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from monai.transforms import SpatialPad
from monai.transforms.utils import generate_spatial_bounding_box


@dataclass(frozen=True)
class Geometry:
    """Index-to-physical mapping of an (X, Y, Z) array, in SimpleITK's LPS world coordinates."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]  # 3x3 row-major; column n is the direction of index axis n

    @classmethod
    def of_image(cls, image: sitk.Image) -> Geometry:
        return cls(tuple(image.GetOrigin()), tuple(image.GetSpacing()), tuple(image.GetDirection()))

    def shifted(self, start: tuple[int, int, int] | list[int]) -> Geometry:
        """Geometry of a sub-array that starts at index ``start`` (i, j, k)."""
        direction = np.asarray(self.direction).reshape(3, 3)
        offset = direction @ (np.asarray(self.spacing) * np.asarray(start, dtype=float))
        return Geometry(tuple(float(v) for v in np.asarray(self.origin) + offset), self.spacing, self.direction)

    def to_image(self, array_xyz: np.ndarray) -> sitk.Image:
        """Wraps a single-channel (X, Y, Z) array as a SimpleITK image with this geometry."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array_xyz, (2, 1, 0))))
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        image.SetDirection(self.direction)
        return image

    def to_dict(self) -> dict:
        return {"origin": list(self.origin), "spacing": list(self.spacing), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        return cls(tuple(data["origin"]), tuple(data["spacing"]), tuple(data["direction"]))


def orient_ras(image: sitk.Image) -> sitk.Image:
    """Permutes/flips index axes so that i, j, k point to Right, Anterior, Superior."""
    return sitk.DICOMOrient(image, "RAS")


def resample_to_spacing(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """Linear resampling onto a grid of the given spacing that covers the same physical extent."""
    old_size = np.asarray(image.GetSize(), dtype=float)
    old_spacing = np.asarray(image.GetSpacing(), dtype=float)
    new_size = [max(1, int(round(n))) for n in old_size * old_spacing / np.asarray(spacing, dtype=float)]
    return sitk.Resample(
        image,
        new_size,
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        tuple(float(s) for s in spacing),
        image.GetDirection(),
        0.0,
        image.GetPixelID(),
    )


def ras_grid(image: sitk.Image, spacing: tuple[float, float, float] | None = None) -> sitk.Image:
    """An empty reference image on a RAS-aligned grid covering ``image``, at ``spacing`` (default: the image's own).

    Its index axes are the image's axes permuted and flipped to point Right, Anterior, Superior
    (the direction stays oblique if the image is). Resampling onto it reorients and changes the
    spacing in one pass, without a full-resolution copy of the input.
    """
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    ras_axes = np.diag([-1.0, -1.0, 1.0])  # R, A, S in LPS coordinates
    order, signs = [], []
    for target in ras_axes:
        alignment = target @ direction  # cosine of each index axis with this RAS axis
        alignment[order] = 0
        axis = int(np.argmax(np.abs(alignment)))
        order.append(axis)
        signs.append(1.0 if alignment[axis] > 0 else -1.0)
    new_direction = direction[:, order] * np.asarray(signs)[None, :]
    old_spacing = np.asarray(image.GetSpacing())
    new_spacing = np.asarray(spacing if spacing is not None else old_spacing[order], dtype=float)
    size = np.asarray(image.GetSize())
    corners = np.array([[c[0], c[1], c[2]] for c in np.ndindex(2, 2, 2)]) * (size - 1)
    points = np.asarray(image.GetOrigin()) + (direction @ (corners * old_spacing).T).T
    projected = points @ new_direction  # coordinates along the new axes
    low, high = projected.min(axis=0), projected.max(axis=0)
    new_size = [int(round(extent / step)) + 1 for extent, step in zip(high - low, new_spacing)]
    grid = sitk.Image([max(1, n) for n in new_size], sitk.sitkUInt8)
    grid.SetSpacing(tuple(float(v) for v in new_spacing))
    grid.SetDirection(tuple(new_direction.ravel()))
    grid.SetOrigin(tuple(float(v) for v in new_direction @ low))
    return grid


def resample_onto(image: sitk.Image, grid: sitk.Image, interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """Resamples ``image`` onto ``grid``'s geometry as float32 (outside the image: its minimum)."""
    outside = float(sitk.GetArrayViewFromImage(image).min())
    pixel = sitk.sitkVectorFloat32 if image.GetNumberOfComponentsPerPixel() > 1 else sitk.sitkFloat32
    return sitk.Resample(image, grid, sitk.Transform(), interpolator, outside, pixel)


def image_to_array(image: sitk.Image) -> np.ndarray:
    """SimpleITK image (scalar or vector) -> float32 array (C, X, Y, Z)."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # (Z, Y, X) or (Z, Y, X, C)
    if array.ndim == 3:
        array = array[..., None]
    return np.ascontiguousarray(np.transpose(array, (3, 2, 1, 0)))


def foreground_box(array: np.ndarray, margin: int = 2) -> tuple[list[int], list[int]]:
    """(start, end) index box of the voxels of (C, X, Y, Z) brighter than the volume minimum in any channel.

    The whole array when nothing is brighter.
    """
    floor = float(array.min())
    start, end = generate_spatial_bounding_box(array, select_fn=lambda x: x > floor, margin=margin, allow_smaller=True)
    if any(e <= s for s, e in zip(start, end)):
        return [0, 0, 0], list(array.shape[1:])
    return [int(v) for v in start], [int(v) for v in end]


def crop_foreground(array: np.ndarray, geometry: Geometry, margin: int = 2) -> tuple[np.ndarray, Geometry]:
    """Crops (C, X, Y, Z) to its :func:`foreground_box`; returns the crop and its geometry."""
    start, end = foreground_box(array, margin)
    cropped = array[:, start[0] : end[0], start[1] : end[1], start[2] : end[2]]
    return np.ascontiguousarray(cropped), geometry.shifted(start)


def pad_to_size(array: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Pads (C, X, Y, Z) at the far end of each axis up to ``size`` with the array minimum.

    Padding at the far end leaves the origin, and so the geometry, unchanged.
    """
    pad = SpatialPad(spatial_size=size, method="end", mode="constant", value=float(array.min()))
    return np.asarray(pad(array))

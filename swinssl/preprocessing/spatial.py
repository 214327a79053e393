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


def image_to_array(image: sitk.Image) -> np.ndarray:
    """SimpleITK image (scalar or vector) -> float32 array (C, X, Y, Z)."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # (Z, Y, X) or (Z, Y, X, C)
    if array.ndim == 3:
        array = array[..., None]
    return np.ascontiguousarray(np.transpose(array, (3, 2, 1, 0)))


def crop_foreground(array: np.ndarray, geometry: Geometry, margin: int = 2) -> tuple[np.ndarray, Geometry]:
    """Crops (C, X, Y, Z) to the box of voxels brighter than the volume minimum in any channel."""
    floor = float(array.min())
    start, end = generate_spatial_bounding_box(array, select_fn=lambda x: x > floor, margin=margin, allow_smaller=True)
    if any(e <= s for s, e in zip(start, end)):
        return array, geometry
    cropped = array[:, start[0] : end[0], start[1] : end[1], start[2] : end[2]]
    return np.ascontiguousarray(cropped), geometry.shifted(start)


def pad_to_size(array: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Pads (C, X, Y, Z) at the far end of each axis up to ``size`` with the array minimum.

    Padding at the far end leaves the origin, and so the geometry, unchanged.
    """
    pad = SpatialPad(spatial_size=size, method="end", mode="constant", value=float(array.min()))
    return np.asarray(pad(array))

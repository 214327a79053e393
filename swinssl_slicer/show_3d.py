"""Whether a segmentation is shown in 3-D. Its closed surfaces are built on Slicer's GUI thread, segment by segment
over the whole labelmap (seconds for a small volume, up to a minute for a full CT with many segments), so they are
built only when asked: the faces offer "Show 3D", ticked by default only for volumes that are not large."""

from __future__ import annotations

LARGE_VOLUME_VOXELS = 10_000_000  # about a 512 x 512 x 40 CT; a full abdominal CT (512 x 512 x 300) is 78 M voxels


def show_3d_by_default(volume_node) -> bool:
    """True unless ``volume_node`` has more than :data:`LARGE_VOLUME_VOXELS` voxels (True without a volume or image)."""
    image = volume_node.GetImageData() if volume_node is not None else None
    if image is None:
        return True
    columns, rows, slices = image.GetDimensions()
    return columns * rows * slices <= LARGE_VOLUME_VOXELS


def show_in_3d(segmentation_node, shown: bool) -> None:
    """Builds the closed surfaces of ``segmentation_node`` (shown), or removes them so nothing is computed or drawn in
    3-D; the binary labelmap (the source representation) is untouched either way."""
    if shown:
        segmentation_node.CreateClosedSurfaceRepresentation()
    else:
        segmentation_node.RemoveClosedSurfaceRepresentation()

"""A segmentation drawn over its CT: axial, coronal and sagittal slices through the segments' centre, with a legend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from swinssl.labels.table import LabelTable  # noqa: E402
from swinssl.preprocessing.spatial import image_to_array, orient_ras  # noqa: E402
from swinssl.training.preview import display_slices, save_figure  # noqa: E402

SOFT_TISSUE_HU = (-160.0, 240.0)


def labelled_centre(labels_xyz: np.ndarray) -> tuple[int, int, int]:
    """Centre of mass (i, j, k) of the labelled voxels of an (X, Y, Z) map; the middle when none is labelled."""
    points = np.argwhere(labels_xyz > 0)
    if not len(points):
        return tuple(n // 2 for n in labels_xyz.shape)
    return tuple(int(round(v)) for v in points.mean(axis=0))


def write_overlay_png(image: sitk.Image, labels: sitk.Image, table: LabelTable, path: Path, title: str,
                      window: tuple[float, float] | None = SOFT_TISSUE_HU, opacity: float = 0.45) -> Path:
    """Writes a PNG of ``labels`` (a label map on ``image``'s grid) over ``image`` shown in ``window``
    (image units, e.g. HU; None: its 1st..99th percentiles).

    Both are oriented to RAS first, so the slices follow the radiological convention of the previews.
    """
    oriented = orient_ras(image)
    ct = image_to_array(oriented)[0]  # (X, Y, Z)
    spacing = oriented.GetSpacing()
    if window is None:
        window = tuple(float(v) for v in np.percentile(ct, (1, 99)))
    label_map = image_to_array(orient_ras(labels))[0].astype(np.int32)
    centre = labelled_centre(label_map)
    colours = ListedColormap([(0, 0, 0, 0)] + [(*label.color, 1.0) for label in table.labels])
    norm = BoundaryNorm(np.arange(-0.5, table.num_classes), colours.N)  # value v -> colour v
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.8))
    ct_views = display_slices(ct, spacing, centre)
    label_views = display_slices(label_map, spacing, centre)
    for axis, (view, slice_ct, aspect), (_, slice_labels, _) in zip(axes, ct_views, label_views):
        axis.imshow(slice_ct, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect)
        shown = np.ma.masked_equal(slice_labels, 0)
        axis.imshow(shown, cmap=colours, norm=norm, alpha=opacity, aspect=aspect, interpolation="nearest")
        axis.set_title(view)
        axis.set_xticks([])
        axis.set_yticks([])
    present = set(np.unique(label_map)) - {0}
    legend = [Patch(color=label.color, label=label.name) for label in table.labels if label.value in present]
    figure.legend(handles=legend, loc="lower center", ncol=max(1, len(legend)), frameon=False)
    figure.suptitle(f"{title} (display window {window[0]:.0f}..{window[1]:.0f})")
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(figure, path)
    return path

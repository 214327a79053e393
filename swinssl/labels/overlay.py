"""A picture of a segmentation for people: axial and coronal CT slices through the segmented organs,
each segment in its colour, with a legend (name and volume)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from swinssl.labels.table import LabelTable  # noqa: E402
from swinssl.training.preview import save_figure  # noqa: E402

SOFT_TISSUE_WINDOW = (-160.0, 240.0)  # HU: the abdominal window radiologists read organs in
ALPHA = 0.45


def overlay_png(image: sitk.Image, labels: sitk.Image, table: LabelTable, path: Path, window: tuple[float, float] = SOFT_TISSUE_WINDOW) -> Path:
    """Writes ``path``: the axial and the coronal slice through the segments' centre, radiological view
    (patient's right on the image's left, anterior and superior at the top)."""
    image_lps = sitk.DICOMOrient(image, "LPS")  # arrays (K, J, I): K inferior->superior, J anterior->posterior, I right->left
    labels_lps = sitk.DICOMOrient(labels, "LPS")
    ct = np.clip((sitk.GetArrayFromImage(image_lps).astype(np.float32) - window[0]) / (window[1] - window[0]), 0, 1)
    label = sitk.GetArrayFromImage(labels_lps)
    spacing_i, spacing_j, spacing_k = image_lps.GetSpacing()
    centre = np.argwhere(label > 0).mean(axis=0).round().astype(int) if label.any() else np.array(label.shape) // 2
    colours = np.zeros((max(table.num_classes, int(label.max()) + 1), 4))
    for entry in table.labels:
        colours[entry.value] = (*entry.color, ALPHA)
    views = [("axial", ct[centre[0]], label[centre[0]], spacing_j / spacing_i),
             ("coronal", ct[::-1, centre[1]], label[::-1, centre[1]], spacing_k / spacing_i)]
    figure, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    for axis, (name, slice_ct, slice_label, aspect) in zip(axes, views):
        axis.imshow(slice_ct, cmap="gray", vmin=0, vmax=1, aspect=aspect)
        axis.imshow(colours[slice_label], aspect=aspect)
        axis.set_title(name)
        axis.set_axis_off()
    millilitres = np.prod(image_lps.GetSpacing()) / 1000.0
    counts = np.bincount(label.ravel(), minlength=colours.shape[0])
    handles = [Patch(color=entry.color, label=f"{entry.name} ({counts[entry.value] * millilitres:.0f} mL)") for entry in table.labels]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(figure, path)
    return path

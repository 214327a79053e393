"""Inpainting previews (original / masked / reconstructed crop) and loss-curve plots.

Previews use one fixed crop with one fixed cutout pattern, so successive previews show how the
reconstruction improves. The NRRD files carry the crop's physical geometry, so Slicer shows them
at the right place over the source volume.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from swinssl.io.atomic import atomic_path  # noqa: E402
from swinssl.preprocessing.cache import PreparedVolume  # noqa: E402
from swinssl.ssl.augment import CutoutSettings, inner_cutout  # noqa: E402

PREVIEW_KINDS = ("original", "masked", "reconstruction")


def display_slices(volume: np.ndarray, spacing: tuple[float, float, float],
                   centre: tuple[int, int, int] | None = None) -> list[tuple[str, np.ndarray, float]]:
    """Axial, coronal and sagittal slices through ``centre`` (default: the middle) of a RAS-oriented
    (X, Y, Z) array, in radiological view.

    Returns (title, 2-D image with rows top-to-bottom, aspect = row spacing / column spacing) triples.
    Patient right is on screen left, anterior/superior on top.
    """
    x, y, z = centre if centre is not None else (n // 2 for n in volume.shape)
    sx, sy, sz = spacing
    axial = volume[:, :, z].T[::-1, ::-1]
    coronal = volume[:, y, :].T[::-1, ::-1]
    sagittal = volume[x, :, :].T[::-1, ::-1]
    return [("axial", axial, sy / sx), ("coronal", coronal, sz / sx), ("sagittal", sagittal, sz / sy)]


class PreviewWriter:
    """Writes the preview of one fixed crop of ``volume`` at the steps it is asked to."""

    def __init__(self, out_dir: Path, volume: PreparedVolume, roi: int, seed: int, cutout: CutoutSettings,
                 display: tuple[float, float, str] = (0.0, 1.0, "")) -> None:
        """``display``: the (low, high) normalised values the PNG maps to black and white, and its caption."""
        self.out_dir = out_dir
        self.display = display
        array = volume.array
        start = [(n - roi) // 2 for n in array.shape[1:]]
        box = tuple(slice(s, s + roi) for s in start)
        self.original = torch.from_numpy(np.asarray(array[(slice(None), *box)], dtype=np.float32))[None]
        fixed = CutoutSettings(cutout.max_fraction, cutout.max_fraction, cutout.max_box, cutout.min_box, style="exact")
        self.masked, _ = inner_cutout(self.original, torch.Generator().manual_seed(seed), fixed)
        self.geometry = volume.geometry.shifted(start)

    @torch.no_grad()
    def write(self, model: torch.nn.Module, step: int, device: torch.device) -> dict:
        """Runs the model on the masked crop; writes 3 NRRD files and one PNG.

        Returns the ``preview`` event's fields: ``paths`` (the files) and ``body_correlation``, the Pearson r
        between the original crop and its reconstruction inside the body (:func:`body_correlation`): near 0
        for a grey field or a body-shaped blob, towards 1 as the reconstruction follows the anatomy.
        """
        was_training = model.training
        model.eval()
        reconstruction = model(self.masked.to(device)).reconstruction.float().cpu()
        model.train(was_training)
        arrays = {
            "original": self.original[0, 0].numpy(),
            "masked": self.masked[0, 0].numpy(),
            "reconstruction": reconstruction[0, 0].clamp(0, 1).numpy(),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for kind, array in arrays.items():
            path = self.out_dir / f"step_{step:06d}_{kind}.nrrd"
            with atomic_path(path) as temporary:
                sitk.WriteImage(self.geometry.to_image(array), str(temporary), useCompression=True)
            paths[kind] = str(path)
        paths["png"] = str(self._write_png(arrays, step))
        return {"paths": paths, "body_correlation": body_correlation(arrays["original"], arrays["reconstruction"])}

    def _write_png(self, arrays: dict[str, np.ndarray], step: int) -> Path:
        figure, axes = plt.subplots(3, 3, figsize=(9, 9))
        for row, (kind, array) in enumerate(arrays.items()):
            for column, (view, image, aspect) in enumerate(display_slices(array, self.geometry.spacing)):
                axis = axes[row, column]
                axis.imshow(image, cmap="gray", vmin=self.display[0], vmax=self.display[1], aspect=aspect)
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0:
                    axis.set_title(view)
                if column == 0:
                    axis.set_ylabel(kind)
        figure.suptitle(f"Inpainting preview, step {step}" + (f" ({self.display[2]})" if self.display[2] else ""))
        figure.tight_layout()
        path = self.out_dir / f"step_{step:06d}.png"
        save_figure(figure, path)
        return path


def body_correlation(original: np.ndarray, reconstruction: np.ndarray) -> float | None:
    """Pearson r of two same-shape arrays over the voxels where ``original`` is above a quarter of its range
    (for CT in the default window: above -500 HU, i.e. soft tissue and bone, not air, lung or padding), so
    that a blob shaped like the body outline does not score; None when fewer than two such voxels exist
    or either is constant there."""
    low, high = float(original.min()), float(original.max())
    body = original > low + 0.25 * (high - low)
    if body.sum() < 2:
        return None
    a, b = original[body].astype(np.float64), reconstruction[body].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def plot_loss_curves(history: list[list[float]], path: Path) -> Path:
    """Plots total / rotation / contrast / inpaint losses against the step.

    Args:
        history: rows of [step, total, rotation, contrast, inpaint].
    """
    rows = np.asarray(history, dtype=float).reshape(-1, 5)
    figure, axis = plt.subplots(figsize=(7, 4))
    for column, name in enumerate(("total", "rotation", "contrast", "inpaint"), start=1):
        axis.plot(rows[:, 0], rows[:, column], label=name)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)
    return path


def save_figure(figure, path: Path) -> None:
    """Saves a matplotlib figure as PNG atomically and closes it."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=80, format="png")
    plt.close(figure)

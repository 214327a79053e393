"""Inpainting previews (original / masked / reconstructed crop) and loss-curve plots.

Previews use one fixed crop with one fixed cutout pattern, so successive previews show how the
reconstruction improves. The NRRD files carry the crop's physical geometry, so Slicer shows them
at the right place over the source volume.

What a preview measures is inpainting, not auto-encoding: r and L1 inside the holes (cut-out voxels of
the body), beside the same two numbers for a fill that learns nothing (Gaussian interpolation of the
visible voxels, computed once per run). A network that does not beat that fill has not learnt anatomy.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from swinssl.io.atomic import atomic_path  # noqa: E402
from swinssl.preview_text import PANEL_LABELS, describe  # noqa: E402
from swinssl.preprocessing.cache import PreparedVolume  # noqa: E402
from swinssl.ssl.augment import CutoutSettings, inner_cutout  # noqa: E402
from swinssl.training.config import PreviewDisplay  # noqa: E402

PREVIEW_KINDS = ("original", "masked", "reconstruction")
HOLE_OUTLINE = "#ffd400"
BASELINE = "Gaussian interpolation of the visible voxels"


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


def body_mask(original: np.ndarray) -> np.ndarray:
    """Voxels above a quarter of the crop's range (CT in the training window: above -500 HU, i.e. soft tissue
    and bone, not air, lung or padding). Same shape as ``original``, bool."""
    low, high = float(original.min()), float(original.max())
    return original > low + 0.25 * (high - low)


def interpolate_holes(masked: np.ndarray, holes: np.ndarray, sigma: float) -> np.ndarray:
    """The no-learning fill: each cut-out voxel gets the Gaussian-weighted mean (``sigma`` voxels) of the visible
    voxels around it (normalised convolution); visible voxels are kept. (X, Y, Z) arrays, ``holes`` bool."""
    visible = (~holes).astype(np.float64)
    weight = gaussian_filter(visible, sigma, mode="nearest")
    value = gaussian_filter(masked * visible, sigma, mode="nearest")
    fallback = float(masked[~holes].mean()) if (~holes).any() else 0.5
    filled = np.where(weight > 1e-6, value / np.maximum(weight, 1e-6), fallback)
    return np.where(holes, filled, masked).astype(np.float32)


def hole_metrics(original: np.ndarray, filled: np.ndarray, region: np.ndarray, scale: float) -> dict:
    """``r``: Pearson r of original and ``filled`` over ``region`` (None when under two voxels or either is constant
    there: a flat fill has no anatomy); ``l1``: mean absolute difference there, times ``scale``; ``voxels``."""
    a, b = original[region].astype(np.float64), filled[region].astype(np.float64)
    r = float(np.corrcoef(a, b)[0, 1]) if a.size >= 2 and a.std() > 0 and b.std() > 0 else None
    return {"r": r, "l1": float(np.abs(a - b).mean() * scale) if a.size else None, "voxels": int(a.size)}


class PreviewWriter:
    """Writes the preview of one fixed crop of ``volume`` at the steps it is asked to."""

    def __init__(self, out_dir: Path, volume: PreparedVolume, roi: int, seed: int, cutout: CutoutSettings,
                 display: PreviewDisplay = PreviewDisplay()) -> None:
        self.out_dir = out_dir
        self.display = display
        array = volume.array
        start = [(n - roi) // 2 for n in array.shape[1:]]
        box = tuple(slice(s, s + roi) for s in start)
        self.original = torch.from_numpy(np.asarray(array[(slice(None), *box)], dtype=np.float32))[None]
        fixed = CutoutSettings(cutout.max_fraction, cutout.max_fraction, cutout.max_box, cutout.min_box, style="exact")
        self.masked, mask = inner_cutout(self.original, torch.Generator().manual_seed(seed), fixed)
        self.geometry = volume.geometry.shifted(start)
        self.cut = mask[0, 0].numpy()  # (X, Y, Z) bool: the cut-out voxels
        original, masked = self.original[0, 0].numpy(), self.masked[0, 0].numpy()
        self.holes = self.cut & body_mask(original)  # where inpainting is measured
        self.sigma = max(1.0, 0.05 * roi)
        self.baseline = hole_metrics(original, interpolate_holes(masked, self.cut, self.sigma), self.holes, display.scale)

    @torch.no_grad()
    def write(self, model: torch.nn.Module, step: int, device: torch.device) -> dict:
        """Runs the model on the masked crop; writes the 3 crops and the holes as NRRD files, and one PNG.

        Returns the ``preview`` event's fields: ``paths``; ``holes``: r and L1 of the reconstruction inside the
        holes (:func:`hole_metrics`, L1 in ``unit``); ``baseline``: the same for :func:`interpolate_holes`, with
        its ``method``; ``beats_interpolation``: higher r and lower L1 than that baseline; ``window``: [low, high, name]
        of the PNG's main display window in the crops' 0..1 units (a face shows the crops in it).
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
        metrics = hole_metrics(arrays["original"], arrays["reconstruction"], self.holes, self.display.scale)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for kind, array in {**arrays, "holes": self.cut.astype(np.uint8)}.items():
            path = self.out_dir / f"step_{step:06d}_{kind}.nrrd"
            with atomic_path(path) as temporary:
                sitk.WriteImage(self.geometry.to_image(array), str(temporary), useCompression=True)
            paths[kind] = str(path)
        paths["png"] = str(self._write_png(arrays, step, metrics))
        beats = None if metrics["r"] is None or self.baseline["r"] is None else bool(
            metrics["r"] > self.baseline["r"] and metrics["l1"] < self.baseline["l1"])
        return {"paths": paths, "holes": metrics, "baseline": {**self.baseline, "method": f"{BASELINE} (sigma {self.sigma:g} voxels)"},
                "unit": self.display.unit, "beats_interpolation": beats, "window": list(self.display.windows[0])}

    def caption(self, metrics: dict) -> str:
        unit = self.display.unit
        return (f"inside the holes ({metrics['voxels']} cut-out body voxels): reconstruction {describe(metrics, unit)}\n"
                f"no-learning baseline ({BASELINE}): {describe(self.baseline, unit)}")

    def _write_png(self, arrays: dict[str, np.ndarray], step: int, metrics: dict) -> Path:
        """Columns: original / masked / reconstruction; rows: axial, coronal, sagittal in the first window, and an axial
        row per further window (right after the first axial row). Holes outlined in yellow in every panel."""
        main, *extra = self.display.windows
        rows = [("axial", main), *(("axial", window) for window in extra), ("coronal", main), ("sagittal", main)]
        views = {kind: {name: (image, aspect) for name, image, aspect in display_slices(array, self.geometry.spacing)}
                 for kind, array in arrays.items()}
        outlines = {name: image for name, image, _ in display_slices(self.cut.astype(np.float32), self.geometry.spacing)}
        figure, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows) + 0.6), squeeze=False)
        for row, (view, (low, high, window_name)) in enumerate(rows):
            for column, kind in enumerate(PREVIEW_KINDS):
                image, aspect = views[kind][view]
                axis = axes[row, column]
                axis.imshow(image, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
                if outlines[view].any():
                    axis.contour(outlines[view], levels=[0.5], colors=HOLE_OUTLINE, linewidths=0.7)
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0:
                    axis.set_title(PANEL_LABELS[kind], fontsize=11, fontweight="bold")
                if column == 0:
                    axis.set_ylabel(f"{view}\n{window_name}", fontsize=9)
        figure.suptitle(f"Inpainting preview, step {step} (holes outlined in yellow)\n{self.caption(metrics)}", fontsize=9)
        figure.tight_layout()
        path = self.out_dir / f"step_{step:06d}.png"
        save_figure(figure, path)
        return path


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

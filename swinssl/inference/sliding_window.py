"""Sliding-window inference that keeps only a float16 logit sum at model resolution, then arg-maxes.

Windows are placed exactly as ``monai.inferers.sliding_window_inference`` places them over the whole
image (same scan interval, same Gaussian importance map), so labels agree with MONAI's averaged-logit
arg-max up to float16 rounding and skipped air windows. Windows outside a given foreground box are
skipped too, and the logit sum covers only the windows that run (not the whole image): placing windows
over the cropped box instead would move them and change 0.3-1.2 % of the labels on real CTs.
Dividing by the summed weights does not change an arg-max, so the weight map is kept only for a
confidence map; voxels no window covered (all skipped) stay background (0).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval

ProgressCallback = Callable[[int, int, int], None]  # (windows done, windows total, windows skipped)


def symmetric_padding(size: tuple[int, ...], roi: tuple[int, ...]) -> list[int]:
    """F.pad amounts (last axis first) that bring each axis up to ``roi`` the way MONAI pads."""
    pads: list[int] = []
    for n, r in reversed(list(zip(size, roi))):
        missing = max(r - n, 0)
        pads += [missing // 2, missing - missing // 2]
    return pads


def window_slices(padded_size: tuple[int, ...], roi: int, overlap: float) -> list[tuple[slice, ...]]:
    """The windows MONAI places over a (padded) spatial size: same scan interval, same order."""
    rois = (roi,) * len(padded_size)
    return dense_patch_slices(padded_size, rois, _get_scan_interval(padded_size, rois, len(padded_size), (overlap,) * len(padded_size)))


class WindowPrediction(NamedTuple):
    """labels: (X, Y, Z) uint8 (int16 for >255 classes); confidence: (X, Y, Z) float32 in [0, 1] or None."""

    labels: torch.Tensor
    confidence: torch.Tensor | None


def sliding_window_labels(image: torch.Tensor, network: torch.nn.Module, roi: int, num_classes: int, overlap: float = 0.5,
                          **options) -> torch.Tensor:
    """The label map of :func:`sliding_window_predict` (same arguments, without the confidence)."""
    return sliding_window_predict(image, network, roi, num_classes, overlap, **options).labels


@torch.no_grad()
def sliding_window_predict(
    image: torch.Tensor,
    network: torch.nn.Module,
    roi: int,
    num_classes: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    device: torch.device = torch.device("cpu"),
    amp_dtype: torch.dtype | None = None,
    accumulate_dtype: torch.dtype = torch.float16,
    body_threshold: float | None = None,
    foreground: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    channels_last: bool = True,
    progress: ProgressCallback | None = None,
    confidence: bool = False,
) -> WindowPrediction:
    """Label map (and, with ``confidence``, a confidence map) of a normalised (C, X, Y, Z) image.

    Args:
        body_threshold: skip windows in which no voxel of any channel exceeds this value
            (air-only windows); None runs every window.
        foreground: (start, end) voxel corners of the box holding the body (end exclusive, image axes);
            windows that do not reach into it are skipped, and voxels outside it are background.
        channels_last: run the network's 3-D convolutions in channels-last memory order (the
            network is converted in place; faster oneDNN convolutions on the CPU, same values).
        confidence: also return the largest softmax probability of the Gaussian-weighted mean logits (what
            MONAI's ``sliding_window_inference`` + softmax gives), from the same logit sums; voxels no window
            covered (skipped air) are background by rule and get 1.
    Returns:
        labels and confidence on the image's grid, on the CPU.
    """
    size = tuple(image.shape[1:])
    rois = (roi,) * 3
    pads = symmetric_padding(size, rois)
    padded = F.pad(image, pads) if any(pads) else image
    padded_size = tuple(padded.shape[1:])
    windows = window_slices(padded_size, roi, overlap)
    before = tuple(reversed(pads[0::2]))  # padding before each axis
    box = foreground or ((0,) * 3, size)
    box = tuple(slice(start + b, end + b) for start, end, b in zip(*box, before))  # in padded coordinates
    kept = [w for w in windows if all(ws.start < bs.stop and bs.start < ws.stop for ws, bs in zip(w, box))
            and (body_threshold is None or bool((padded[(slice(None), *w)] > body_threshold).any()))]
    skipped = len(windows) - len(kept)
    corner = tuple(min((w[axis].start for w in kept), default=0) for axis in range(3))  # the logit sum spans the kept windows
    extent = tuple(max((w[axis].stop for w in kept), default=0) - corner[axis] for axis in range(3))
    weight = compute_importance_map(rois, mode="gaussian", sigma_scale=0.125, device=device)
    logit_sum = torch.zeros((num_classes, *extent), dtype=accumulate_dtype, device=device)
    weight_sum = torch.zeros(extent, dtype=torch.float32, device=device) if confidence else None
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    network = network.to(device=device, memory_format=memory_format).eval()
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    done = 0
    for first in range(0, len(kept), batch_size):
        batch_windows = kept[first : first + batch_size]
        batch = torch.stack([padded[(slice(None), *w)] for w in batch_windows]).to(device, non_blocking=True)
        batch = batch.contiguous(memory_format=memory_format)
        with autocast:
            logits = network(batch)
        weighted = logits.float() * weight
        for window, values in zip(batch_windows, weighted):
            inside = tuple(slice(w.start - c, w.stop - c) for w, c in zip(window, corner))
            logit_sum[(slice(None), *inside)] += values.to(accumulate_dtype)
            if weight_sum is not None:
                weight_sum[inside] += weight
        done += len(batch_windows)
        if progress is not None:
            progress(done + skipped, len(windows), skipped)
    if progress is not None and not kept:
        progress(len(windows), len(windows), skipped)

    # the image's voxels inside both the foreground box and the kept windows, in image and in logit-sum coordinates
    region = [(max(bs.start, c), min(bs.stop, c + e)) for bs, c, e in zip(box, corner, extent)]
    in_image = tuple(slice(start - b, max(stop, start) - b) for (start, stop), b in zip(region, before))
    in_sum = tuple(slice(start - c, max(stop, start) - c) for (start, stop), c in zip(region, corner))
    labels = torch.zeros(size, dtype=torch.uint8 if num_classes <= 256 else torch.int16)
    labels[in_image] = logit_sum[(slice(None), *in_sum)].argmax(dim=0).to(labels.dtype).cpu()
    certainty = None
    if weight_sum is not None:
        certainty = torch.ones(size, dtype=torch.float32)
        certainty[in_image] = max_probability(logit_sum[(slice(None), *in_sum)], weight_sum[in_sum]).cpu()
    return WindowPrediction(labels, certainty)


def max_probability(logit_sum: torch.Tensor, weight_sum: torch.Tensor, slab: int = 16) -> torch.Tensor:
    """max_k softmax(logit_sum / weight_sum)_k per voxel: (K, X, Y, Z) weighted sums, (X, Y, Z) weights ->
    (X, Y, Z) float32; 1 where no window contributed. Computed in slabs along X to bound the float32 copy."""
    result = torch.ones(weight_sum.shape, dtype=torch.float32, device=weight_sum.device)
    for start in range(0, weight_sum.shape[0], slab):
        weights = weight_sum[start : start + slab]
        covered = weights > 0
        mean_logits = logit_sum[:, start : start + slab].float() / weights.clamp_min(1e-12)
        result[start : start + slab] = torch.where(covered, torch.softmax(mean_logits, dim=0).amax(dim=0), 1.0)
    return result

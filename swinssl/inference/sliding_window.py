"""Sliding-window inference that keeps only a float16 logit sum at model resolution, then arg-maxes.

Windows are placed exactly as ``monai.inferers.sliding_window_inference`` places them (same scan
interval, same Gaussian importance map), so labels agree with MONAI's averaged-logit arg-max up to
float16 rounding and skipped air windows. Dividing by the summed weights does not change an
arg-max, so the weight map is kept only for a confidence map; voxels no window covered (all skipped)
stay background (0).
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
    channels_last: bool = True,
    progress: ProgressCallback | None = None,
    confidence: bool = False,
) -> WindowPrediction:
    """Label map (and, with ``confidence``, a confidence map) of a normalised (C, X, Y, Z) image.

    Args:
        body_threshold: skip windows in which no voxel of any channel exceeds this value
            (air-only windows); None runs every window.
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
    weight = compute_importance_map(rois, mode="gaussian", sigma_scale=0.125, device=device)
    logit_sum = torch.zeros((num_classes, *padded_size), dtype=accumulate_dtype, device=device)
    weight_sum = torch.zeros(padded_size, dtype=torch.float32, device=device) if confidence else None
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    network = network.to(device=device, memory_format=memory_format).eval()
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    kept = [w for w in windows if body_threshold is None or bool((padded[(slice(None), *w)] > body_threshold).any())]
    skipped = len(windows) - len(kept)
    done = 0
    for first in range(0, len(kept), batch_size):
        batch_windows = kept[first : first + batch_size]
        batch = torch.stack([padded[(slice(None), *w)] for w in batch_windows]).to(device, non_blocking=True)
        batch = batch.contiguous(memory_format=memory_format)
        with autocast:
            logits = network(batch)
        weighted = logits.float() * weight
        for window, values in zip(batch_windows, weighted):
            logit_sum[(slice(None), *window)] += values.to(accumulate_dtype)
            if weight_sum is not None:
                weight_sum[window] += weight
        done += len(batch_windows)
        if progress is not None:
            progress(done + skipped, len(windows), skipped)
    if progress is not None and not kept:
        progress(len(windows), len(windows), skipped)

    crop = tuple(slice(before, before + n) for before, n in zip(reversed(pads[0::2]), size))
    labels = logit_sum.argmax(dim=0)[crop]
    certainty = None if weight_sum is None else max_probability(logit_sum[(slice(None), *crop)], weight_sum[crop]).cpu()
    return WindowPrediction(labels.to(torch.uint8 if num_classes <= 256 else torch.int16).cpu(), certainty)


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

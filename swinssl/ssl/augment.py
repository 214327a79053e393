"""View augmentations for the pretext tasks: 90-degree rotations and random inner cutout.

Tensors are ``(B, C, X, Y, Z)`` with X, Y, Z the RAS-oriented i, j, k axes (see
:mod:`swinssl.preprocessing.spatial`). "Rotation about the z-axis" is a rotation in the (X, Y)
plane, i.e. ``torch.rot90`` over tensor dims (2, 3) of ``(B, C, X, Y, Z)``: axial slices turn, the
superior axis stays. (The reference code rotates dims (2, 3) of a ``(C, H, W, D)`` sample, which
is the (W, D) plane; we follow the paper's text.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ROTATION_DIMS = (2, 3)  # (X, Y) plane of (B, C, X, Y, Z): rotation about the z (superior) axis


def rotate_views(views: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates each sample by a random multiple of 90 degrees about z.

    Args:
        views: (B, C, X, Y, Z) with X == Y.
    Returns:
        (rotated views (B, C, X, Y, Z), rotation classes (B,) int64 in 0..3 = k * 90 degrees)
    """
    labels = torch.randint(0, 4, (views.shape[0],), generator=generator)
    rotated = torch.stack([torch.rot90(view, int(k), dims=(1, 2)) for view, k in zip(views, labels)])
    return rotated, labels


@dataclass(frozen=True)
class CutoutSettings:
    """Random inner cutout (Tang et al. Sec. 3.2): noise boxes until a fraction s of the volume is hidden.

    Attributes:
        max_fraction: s is drawn uniformly from [min_fraction, max_fraction] per sample.
        min_fraction: lower end of that range (0 in training; previews fix s).
        max_box: largest box edge, as a fraction of the crop edge.
        min_box: smallest box edge, as a fraction of the crop edge.
    """

    max_fraction: float = 0.3
    min_fraction: float = 0.0
    max_box: float = 0.25
    min_box: float = 0.05


def inner_cutout(
    views: torch.Tensor, generator: torch.Generator, settings: CutoutSettings = CutoutSettings()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fills random boxes with noise (min-max scaled to 0..1) until each sample's masked share reaches s.

    Args:
        views: (B, C, X, Y, Z) intensities in 0..1.
    Returns:
        (masked views (B, C, X, Y, Z), mask (B, 1, X, Y, Z) bool, True where noise was written)
    """
    batch, channels, *size = views.shape
    masks = torch.zeros((batch, 1, *size), dtype=torch.bool)
    low = [max(1, int(round(settings.min_box * n))) for n in size]
    high = [max(lo, int(round(settings.max_box * n))) for lo, n in zip(low, size)]
    for index in range(batch):
        span = settings.max_fraction - settings.min_fraction
        target = settings.min_fraction + float(torch.rand((), generator=generator)) * span
        mask = masks[index, 0]
        while float(mask.float().mean()) < target:
            edges = [int(torch.randint(lo, hi + 1, (), generator=generator)) for lo, hi in zip(low, high)]
            starts = [int(torch.randint(0, n - e + 1, (), generator=generator)) for n, e in zip(size, edges)]
            mask[tuple(slice(s, s + e) for s, e in zip(starts, edges))] = True
    noise = torch.randn(views.shape, generator=generator)
    flat = noise.flatten(1)
    low_values = flat.min(dim=1).values.view(batch, 1, 1, 1, 1)
    high_values = flat.max(dim=1).values.view(batch, 1, 1, 1, 1)
    noise = (noise - low_values) / (high_values - low_values)
    masks = masks.to(views.device)
    return torch.where(masks, noise.to(views.device, views.dtype), views), masks

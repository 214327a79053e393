"""View augmentations for the pretext tasks: 90-degree rotations and random inner cutout (two styles).

Tensors are ``(B, C, X, Y, Z)`` with X, Y, Z the RAS-oriented i, j, k axes (see
:mod:`swinssl.preprocessing.spatial`). "Rotation about the z-axis" is a rotation in the (X, Y)
plane, i.e. ``torch.rot90`` over tensor dims (2, 3) of ``(B, C, X, Y, Z)``: axial slices turn, the
superior axis stays. (The reference code rotates dims (2, 3) of a ``(C, H, W, D)`` sample, which
is the (W, D) plane; we follow the paper's text.)
"""

from __future__ import annotations

import math
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


CUTOUT_STYLES = ("reference", "exact")


@dataclass(frozen=True)
class CutoutSettings:
    """Random inner cutout (Tang et al. Sec. 3.2): boxes hidden until a fraction s of the volume is covered.

    Attributes:
        max_fraction: s is drawn uniformly from [min_fraction, max_fraction] per sample.
        min_fraction: lower end of that range (0 in training; previews fix s).
        max_box: largest box edge, as a fraction of the crop edge.
        min_box: smallest box edge, as a fraction of the crop edge.
        style: ``reference`` (:func:`reference_cutout`, the reference code's ``aug_rand``) or ``exact``
            (:func:`inner_cutout`: one noise field, boxes inside the crop, s measured without double counting).
    """

    max_fraction: float = 0.3
    min_fraction: float = 0.0
    max_box: float = 0.25
    min_box: float = 0.05
    style: str = "reference"

    def __post_init__(self) -> None:
        if self.style not in CUTOUT_STYLES:
            raise ValueError(f"unknown cutout style {self.style!r}; expected one of {CUTOUT_STYLES}")


def apply_cutout(views: torch.Tensor, generator: torch.Generator, settings: CutoutSettings,
                 groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The cutout of ``settings.style`` on (B, C, X, Y, Z) views; returns (masked views, (B, 1, X, Y, Z) bool mask).
    ``groups`` (B,): the reference style pastes only between views of the same group (e.g. modality)."""
    if settings.style == "reference":
        return reference_cutout(views, generator, settings, groups)
    return inner_cutout(views, generator, settings)


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high) (numpy's ``randint`` convention, which the reference uses)."""
    return int(torch.randint(low, max(high, low + 1), (), generator=generator))


def _drop_boxes(sample: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, settings: CutoutSettings,
                donor: torch.Tensor | None) -> None:
    """One pass of the reference ``patch_rand_drop`` on a (C, X, Y, Z) sample, in place.

    Draws s in [min_fraction, max_fraction), then adds boxes until their summed volumes (overlaps counted
    twice) reach s of the crop: start in [0, n - t), edge in [t, m) clipped at the border, with
    t = int(min_box * n) and m = int(max_box * n). Each box gets fresh Gaussian noise min-max scaled to
    0..1 over that box, or, with a ``donor``, the donor's voxels at the same place.
    """
    size = sample.shape[1:]
    span = settings.max_fraction - settings.min_fraction
    target = (settings.min_fraction + float(torch.rand((), generator=generator)) * span) * float(sample[0].numel())
    smallest = [max(1, int(settings.min_box * n)) for n in size]  # >= 1 so that every box has a volume
    largest = [int(settings.max_box * n) for n in size]
    covered = 0
    while covered < target:
        starts = [_randint(0, n - t, generator) for n, t in zip(size, smallest)]
        ends = [min(s + _randint(t, m, generator), n) for s, t, m, n in zip(starts, smallest, largest, size)]
        box = tuple(slice(s, e) for s, e in zip(starts, ends))
        if donor is None:
            noise = torch.randn((sample.shape[0], *(e - s for s, e in zip(starts, ends))), generator=generator)
            noise = (noise - noise.min()) / (noise.max() - noise.min()).clamp_min(1e-12)
            sample[(slice(None), *box)] = noise.to(sample.device, sample.dtype)
        else:
            sample[(slice(None), *box)] = donor[(slice(None), *box)]
        mask[(slice(None), *box)] = True
        covered += math.prod(e - s for s, e in zip(starts, ends))


def reference_cutout(views: torch.Tensor, generator: torch.Generator, settings: CutoutSettings = CutoutSettings(),
                     groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference ``aug_rand`` (research-contributions SwinUNETR/Pretrain, ``utils/ops.py``) on a group of views.

    Sample i first gets a noise pass; then a random index j in [0, B) is drawn and, when j != i
    (probability (B - 1) / B), a second pass pastes boxes from sample j of the group, which may itself
    already be cut out (the reference works in place, in order). Apply it to each view's group of crops,
    as the reference applies it to ``x1`` and ``x2`` separately. With ``groups``, j is drawn among the
    samples of sample i's group only (so a CT crop never receives boxes of an MR crop; the reference's
    batches held one volume).

    Args:
        views: (B, C, X, Y, Z) intensities in 0..1; groups: (B,) integer group of each sample, or None.
    Returns:
        (masked views (B, C, X, Y, Z), mask (B, 1, X, Y, Z) bool, True where noise or another crop was written)
    """
    masked = views.clone()
    masks = torch.zeros((views.shape[0], 1, *views.shape[2:]), dtype=torch.bool, device=views.device)
    for index in range(views.shape[0]):
        _drop_boxes(masked[index], masks[index], generator, settings, donor=None)
        peers = list(range(views.shape[0])) if groups is None else [j for j in range(views.shape[0]) if groups[j] == groups[index]]
        other = peers[_randint(0, len(peers), generator)]
        if other != index:
            _drop_boxes(masked[index], masks[index], generator, settings, donor=masked[other])
    return masked, masks


def inner_cutout(
    views: torch.Tensor, generator: torch.Generator, settings: CutoutSettings = CutoutSettings(style="exact")
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``exact`` style: boxes inside the crop (edges in [min_box, max_box] of the crop edge) until each
    sample's masked share, counted once per voxel, reaches s; filled from one noise field per sample,
    min-max scaled to 0..1. Previews use it, so their masked share is exactly the one asked for.

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

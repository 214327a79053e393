"""Pretext-task losses (Tang et al., CVPR 2022): rotation CE, SimCLR NT-Xent, inpainting L1."""

from __future__ import annotations

from dataclasses import dataclass

INPAINT_LOSSES = ("all", "masked")  # L1 over every voxel (Tang et al.), or over the cut-out voxels only (DAE mask_only, SimMIM)

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent of SimCLR (Chen et al. 2020) over 2N samples.

    For each of the 2N projections, the positive is the other view of the same crop; the
    denominator sums over the other 2N - 1 samples. The loss is the mean over all 2N anchors.

    Args:
        z1, z2: (N, D) projections of the first and second views (N >= 1, pairs row by row).
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.t() / temperature
    logits.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)


@dataclass(frozen=True)
class LossWeights:
    """total = rotation * L_rot + contrast * L_contrast + inpaint * L_inpaint (paper: 1 / 1 / 1)."""

    rotation: float = 1.0
    contrast: float = 1.0
    inpaint: float = 1.0


def pretext_losses(
    rotation_logits: torch.Tensor,
    rotation_labels: torch.Tensor,
    projections: tuple[torch.Tensor, torch.Tensor],
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    weights: LossWeights,
    temperature: float = 0.5,
    inpaint_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All three pretext losses and their weighted total.

    Args:
        rotation_logits: (2N, 4); rotation_labels: (2N,) int64.
        projections: the two views' (N, D) projections, gathered from all ranks when distributed.
        reconstruction, target: (2N, C, X, Y, Z); target is the uncut, rotated view.
        inpaint_mask: (2N, 1, X, Y, Z) bool, True on cut-out voxels: the L1 is then taken over those voxels only
            (DAE's ``mask_only``, SimMIM); None: over every voxel (Tang et al.).
    """
    rotation = F.cross_entropy(rotation_logits.float(), rotation_labels)
    contrast = nt_xent(projections[0], projections[1], temperature)
    if inpaint_mask is None:
        inpaint = F.l1_loss(reconstruction.float(), target.float())
    else:
        weight = inpaint_mask.expand_as(target).float()
        inpaint = ((reconstruction.float() - target.float()).abs() * weight).sum() / weight.sum().clamp_min(1.0)
    total = weights.rotation * rotation + weights.contrast * contrast + weights.inpaint * inpaint
    return {"total": total, "rotation": rotation, "contrast": contrast, "inpaint": inpaint}

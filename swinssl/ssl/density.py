"""SwinFUSE's density-matching term: Jensen-Shannon divergence between per-modality Gaussian KDEs.

For the pooled encoder features of a mixed batch, split by modality into X (for example CT) and Y
(MR), each set gets a kernel density estimate

    p_X(z) = 1/|X| * sum_n K(||z - x_n||_2 / sigma),   K(u) = exp(-u^2 / 2)

(the constant of the Gaussian cancels below). Both estimates are evaluated on the batch's own
features Z = X u Y and normalised over Z into discrete distributions P and Q, and

    JSD(P, Q) = 1/2 KL(P || M) + 1/2 KL(Q || M),   M = (P + Q) / 2,   0 <= JSD <= log 2.

Sign convention: the paper writes L_total = L_inpaint + L_contrast + L_rot - L_JSD and calls the
term density matching. We add the divergence itself, L_total = ... + w * JSD, so that minimising
the loss pulls the two modalities' feature densities together (that is what "matching" needs;
subtracting a divergence would push them apart). sigma: the median pairwise distance of the
batch's features (the median heuristic, not back-propagated) unless a fixed value is given.
"""

from __future__ import annotations

import torch


def median_distance(features: torch.Tensor) -> torch.Tensor:
    """Median of the pairwise Euclidean distances of (N, D) features (N >= 2), detached."""
    distances = torch.cdist(features.detach(), features.detach())
    off_diagonal = distances[~torch.eye(len(features), dtype=torch.bool, device=features.device)]
    return off_diagonal.median().clamp_min(1e-6)


def kde(points: torch.Tensor, samples: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Unnormalised Gaussian KDE of ``samples`` (M, D) evaluated at ``points`` (N, D) -> (N,)."""
    squared = torch.cdist(points, samples).square()
    return torch.exp(-squared / (2 * sigma**2)).mean(dim=1)


def kde_jsd(first: torch.Tensor, second: torch.Tensor, sigma: float | None = None, eps: float = 1e-12) -> torch.Tensor:
    """JSD between the KDEs of two feature sets (N1, D) and (N2, D), evaluated on their union.

    Returns a scalar in [0, log 2]; 0 for identical sets.
    """
    union = torch.cat([first, second])
    bandwidth = median_distance(union) if sigma is None else sigma
    p = kde(union, first, bandwidth)
    q = kde(union, second, bandwidth)
    p = p / p.sum().clamp_min(eps)
    q = q / q.sum().clamp_min(eps)
    m = 0.5 * (p + q)
    kl_pm = (p * (torch.log(p + eps) - torch.log(m + eps))).sum()
    kl_qm = (q * (torch.log(q + eps) - torch.log(m + eps))).sum()
    return 0.5 * (kl_pm + kl_qm)


def modality_jsd(features: torch.Tensor, modalities: torch.Tensor, sigma: float | None = None) -> torch.Tensor | None:
    """JSD between the first two modalities present in a batch.

    Args:
        features: (N, D) pooled encoder features; modalities: (N,) integer modality indices.
    Returns:
        the scalar JSD, or None when fewer than two modalities are present.
    """
    present = torch.unique(modalities)
    if len(present) < 2:
        return None
    return kde_jsd(features[modalities == present[0]], features[modalities == present[1]], sigma)

"""DiceCE for partially labelled cases.

A case that does not annotate class c says nothing about where c is: its background may contain c.
So, per sample, the probabilities of its unannotated classes are merged into background (marginal
loss, Shi et al., MedIA 2021): CE uses log(p_bg + sum p_missing) for background voxels, and Dice
is averaged over the annotated classes only. With every class annotated this is exactly MONAI's
``DiceCELoss(to_onehot_y=True, softmax=True)`` (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1e-5


def partial_dice_ce(logits: torch.Tensor, labels: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """logits (B, K+1, X, Y, Z); labels (B, X, Y, Z) int64 in 0..K; present (B, K+1) bool (present[:, 0] True)."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    ce_terms, dice_terms = [], []
    for sample_log_probs, sample_labels, sample_present in zip(log_probs, labels, present):
        kept = torch.nonzero(sample_present).flatten()
        missing = torch.nonzero(~sample_present).flatten()
        background = sample_log_probs[:1]
        if len(missing):
            background = torch.logsumexp(torch.cat([background, sample_log_probs[missing]]), dim=0, keepdim=True)
        merged = torch.cat([background, sample_log_probs[kept[1:]]])  # (K', X, Y, Z)
        remap = torch.zeros(sample_present.numel(), dtype=torch.long, device=labels.device)
        remap[kept] = torch.arange(len(kept), device=labels.device)
        target = remap[sample_labels]
        ce_terms.append(F.nll_loss(merged[None], target[None], reduction="sum"))
        probabilities = merged.exp()
        one_hot = F.one_hot(target, len(kept)).movedim(-1, 0).float()
        spatial = tuple(range(1, probabilities.dim()))
        intersection = (probabilities * one_hot).sum(spatial)
        denominator = probabilities.sum(spatial) + one_hot.sum(spatial)
        dice_terms.append(1 - (2 * intersection + SMOOTH) / (denominator + SMOOTH))
    voxels = labels.numel()
    return torch.stack(ce_terms).sum() / voxels + torch.cat(dice_terms).mean()

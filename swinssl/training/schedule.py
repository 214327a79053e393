"""AdamW with linear warmup then cosine decay to zero."""

from __future__ import annotations

import math

import torch


def default_warmup(steps: int, warmup_steps: int | None) -> int:
    """``warmup_steps`` when given, else 10 % of the run, at least 1 and at most 500 steps."""
    return warmup_steps if warmup_steps is not None else min(500, max(1, steps // 10))


def warmup_cosine_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear 0 -> 1 over ``warmup`` steps, then cosine 1 -> 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, warmup: int, total: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW + LambdaLR(warmup-cosine).

    The schedule lives in a plain function rather than in scheduler attributes, so a run resumed
    with a new ``total`` follows the new schedule after loading the old scheduler state.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup, total))
    return optimizer, scheduler

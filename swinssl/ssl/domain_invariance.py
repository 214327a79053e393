"""SwinFUSE's domain-invariance module: cross-attention between the two views' patch embeddings.

Placed after the patch embedding and before the first Swin stage. Each view's tokens (queries)
attend to the other view's tokens of the same sample, average-pooled to a coarse grid (keys and
values), so every token is re-weighted by what both augmented views show; regions salient in
both views are emphasised. Pooling keeps the cost at N x N/p^3 for any ROI divisible by 32 (the
token grid is ROI/2 per axis) and any feature size; attention never crosses samples of a batch
(the public code attends across the batch axis and is fixed to 96^3 and feature 48).

The output is ``tokens + gate * attention`` with ``gate`` a learnt per-channel scale starting at
zero, so the module starts as the identity and the encoder's weights stay meaningful without it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DomainInvarianceModule(nn.Module):
    """Cross-view attention on (2B, C, D, H, W) patch embeddings laid out as [view 1 of every
    sample; view 2 of every sample]; returns the same shape.

    Args:
        channels: embedding size C (the Swin feature size).
        heads: attention heads; must divide C (3 divides every Swin feature size).
        pool: key/value grid reduction per axis.
    """

    def __init__(self, channels: int, heads: int = 3, pool: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads ({heads}) must divide the feature size ({channels})")
        self.heads = heads
        self.pool = pool
        self.norm_query = nn.LayerNorm(channels)
        self.norm_context = nn.LayerNorm(channels)
        self.query = nn.Linear(channels, channels)
        self.key_value = nn.Linear(channels, 2 * channels)
        self.out = nn.Linear(channels, channels)
        self.gate = nn.Parameter(torch.zeros(channels))

    def attend(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """tokens (B, C, D, H, W) attend to context (B, C, D, H, W) of the same samples."""
        b, c, d, h, w = tokens.shape
        pool = max(1, min(self.pool, d, h, w))
        pooled = F.avg_pool3d(context, pool, ceil_mode=True)
        queries = self.norm_query(tokens.flatten(2).transpose(1, 2))  # (B, N, C)
        keys_values = self.norm_context(pooled.flatten(2).transpose(1, 2))  # (B, M, C)
        q = self.query(queries).view(b, -1, self.heads, c // self.heads).transpose(1, 2)
        k, v = self.key_value(keys_values).view(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
        update = (self.out(attended) * self.gate).transpose(1, 2).reshape(b, c, d, h, w)
        return tokens + update

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[0] % 2:
            raise ValueError(f"expected [view 1; view 2] with an even batch, got {tokens.shape[0]} samples")
        first, second = tokens.chunk(2)
        return torch.cat([self.attend(first, second), self.attend(second, first)])

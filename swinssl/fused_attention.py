"""Window attention through ``torch.nn.functional.scaled_dot_product_attention``, a drop-in for MONAI's.

MONAI's ``WindowAttention`` forms the (windows, heads, N, N) score tensor, adds the relative
position bias, adds the shifted-window mask, applies softmax and multiplies by V: four passes
over the largest tensor in the network (N = 343 tokens per 7^3 window). Here the bias and the
mask are summed once into one additive mask of shape (nW, heads, N, N) and handed to the fused
kernel, which never writes the scores out. When the bias needs gradients (training), PyTorch
picks its unfused "math" SDPA path, which still saves the separate bias and mask passes. The
sum is MONAI's, so outputs and gradients agree to float rounding (tested), and parameters and
buffers are MONAI's own: state dicts load in both directions unchanged.

The fused CPU kernel needs a mask whose batch axis matches the query's, so attention runs once
per sample, each over that sample's nW windows (windows are sample-major in MONAI's
``window_partition``): the mask is never copied across the batch and no window attends to
another sample's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import WindowAttention


class FusedWindowAttention(WindowAttention):
    """MONAI ``WindowAttention`` with the same weights, computed by the fused SDPA kernel (3-D windows)."""

    def relative_position_bias(self, n: int) -> torch.Tensor:
        """(heads, N, N) bias gathered from the learnt table, contiguous.

        Contiguous matters: a permuted bias makes the summed mask permuted too, and the fused
        kernel would then copy the whole (nW, heads, N, N) mask on every call.
        """
        index = self.relative_position_index[:n, :n].reshape(-1)
        return self.relative_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B * nW, N, C) window tokens, sample-major; mask: (nW, N, N) shift mask or None."""
        b, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B * nW, heads, N, C / heads)
        additive = self.relative_position_bias(n).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            additive = additive + mask.unsqueeze(1)  # (nW, heads, N, N)
        additive = additive.to(q.dtype)
        per_call = additive.shape[0] if mask is not None else b  # windows per attention call
        dropout = self.attn_drop.p if self.training else 0.0
        out = torch.cat([
            F.scaled_dot_product_attention(q[i : i + per_call], k[i : i + per_call], v[i : i + per_call], attn_mask=additive,
                                           dropout_p=dropout, scale=self.scale)
            for i in range(0, b, per_call)
        ])
        x = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


def fuse_window_attention(network: torch.nn.Module) -> int:
    """Switches every MONAI ``WindowAttention`` in ``network`` to ``FusedWindowAttention`` in place.

    Only the class changes: parameters, buffers and state-dict keys stay as they are.
    Returns the number of modules switched.
    """
    switched = 0
    for module in network.modules():
        if type(module) is WindowAttention and len(module.window_size) == 3:
            module.__class__ = FusedWindowAttention
            switched += 1
    return switched

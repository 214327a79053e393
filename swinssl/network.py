"""Building MONAI's SwinUNETR for segmentation, with the pre-MONAI-1.5 patch-merging order on request."""

from __future__ import annotations

import torch
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import PatchMergingV2

from swinssl.fused_attention import fuse_window_attention


class LegacyPatchMerging(PatchMergingV2):
    """3-D patch merging in the channel order of MONAI <= 1.4 (the released SwinUNETR weights).

    MONAI <= 1.4 concatenated the eight 2x2x2 neighbours of ``(B, D, H, W, C)`` tokens as offsets
    (d, h, w) = 000, 100, 010, 001, 101, 010, 001, 111 (two repeated, 110 and 011 missing); MONAI
    1.5 uses 000, 100, 010, 001, 110, 101, 011, 111. Weights trained with the old order only give
    their features with it. Output: (B, D/2, H/2, W/2, 2C).
    """

    OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            return super().forward(x)
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = torch.nn.functional.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat([x[:, a::2, b::2, c::2, :] for a, b, c in self.OFFSETS], dim=-1)
        return self.reduction(self.norm(x))


def build_swin_unetr(
    in_channels: int, num_classes: int, feature_size: int, legacy_patch_merging: bool = False, fused_attention: bool = True
) -> SwinUNETR:
    """SwinUNETR(in_channels -> num_classes logits): MONAI's network and state-dict keys, with the
    pre-1.5 merging order on request and fused window attention (same weights) by default."""
    downsample = LegacyPatchMerging if legacy_patch_merging else "merging"
    network = SwinUNETR(in_channels=in_channels, out_channels=num_classes, feature_size=feature_size, downsample=downsample)
    if fused_attention:
        fuse_window_attention(network)
    return network

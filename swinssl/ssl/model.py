"""Swin UNETR encoder with the three pretext heads of Tang et al. (CVPR 2022)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from monai.networks.nets import SwinUNETR
from torch import nn

from swinssl.fused_attention import fuse_window_attention
from swinssl.network import LegacyPatchMerging
from swinssl.ssl.domain_invariance import DomainInvarianceModule
from swinssl.weights import DECODER_MODULES

DECODERS = ("vae", "plain_deconv", "large_kernel_deconv", "deconv", "upsample", "swinunetr")  # see ReconstructionDecoder, SSLModel


class SSLOutput(NamedTuple):
    rotation_logits: torch.Tensor  # (B, 4)
    projection: torch.Tensor  # (B, projection_dim)
    reconstruction: torch.Tensor  # (B, C, X, Y, Z), same size as the input
    pooled: torch.Tensor  # (B, 16F) average-pooled last-stage features (SwinFUSE's density term)


def _decoder_stage(in_dim: int, out_dim: int, mode: str) -> nn.Sequential:
    """Doubles the spatial size: the reference ``vae`` stage (conv, instance norm, LeakyReLU, upsample), or ours
    (transposed convolution, or upsample then conv; each with affine instance norm and LeakyReLU)."""
    if mode == "vae":
        return nn.Sequential(nn.Conv3d(in_dim, out_dim, 3, padding=1), nn.InstanceNorm3d(out_dim), nn.LeakyReLU(0.01),
                             nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False))
    if mode == "deconv":
        resize = [nn.ConvTranspose3d(in_dim, out_dim, kernel_size=2, stride=2)]
    else:
        resize = [nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False), nn.Conv3d(in_dim, out_dim, 3, padding=1)]
    return nn.Sequential(*resize, nn.InstanceNorm3d(out_dim, affine=True), nn.LeakyReLU(0.01, inplace=True))


class ReconstructionDecoder(nn.Sequential):
    """The inpainting head: from the last Swin stage (input size / 32) back to the input size.

    ``vae``, ``plain_deconv`` and ``large_kernel_deconv`` are the three options of the reference
    ``SSLHead`` (research-contributions SwinUNETR/Pretrain, ``models/ssl_head.py``), layer for layer;
    ``deconv`` and ``upsample`` are ours (normalised stages and an output bias that starts at 0.5, the
    centre of the 0..1 intensity range). Staged heads halve the channels each stage down to ``dim / 16``
    (= feature size). Input (B, 16F, X/32, Y/32, Z/32) -> output (B, C, X, Y, Z).
    """

    def __init__(self, dim: int, out_channels: int, mode: str = "deconv") -> None:
        if mode not in DECODERS or mode == "swinunetr":
            raise ValueError(f"unknown decoder {mode!r}; expected one of {DECODERS}")
        if mode == "large_kernel_deconv":
            super().__init__(nn.ConvTranspose3d(dim, out_channels, kernel_size=32, stride=32))
            return
        widths = [dim, dim // 2, dim // 4, dim // 8, dim // 16]
        if mode == "plain_deconv":
            super().__init__(*[nn.ConvTranspose3d(a, b, kernel_size=2, stride=2) for a, b in zip(widths, widths[1:] + [out_channels])])
            return
        widths.append(dim // 16)
        stages = [_decoder_stage(a, b, mode) for a, b in zip(widths[:-1], widths[1:])]
        output = nn.Conv3d(widths[-1], out_channels, kernel_size=1)
        if mode != "vae":
            nn.init.constant_(output.bias, 0.5)
        super().__init__(*stages, output)


class SSLModel(nn.Module):
    """MONAI SwinUNETR's Swin transformer (``swinViT``) with rotation, contrastive and inpainting heads.

    The encoder is the very module SwinUNETR builds, under the same attribute name, so its
    ``swinViT.*`` weights load into ``SwinUNETR`` for fine-tuning. Rotation and contrastive heads
    act on the globally average-pooled last stage (the reference code takes two single tokens;
    pooling works for any ROI).

    Args:
        in_channels: image channels C (>= 1).
        feature_size: Swin embedding size F (multiple of 12; paper: 48).
        projection_dim: contrastive projection size (paper: 512).
        use_checkpoint: gradient checkpointing in the Swin blocks (saves memory, costs time).
        fused_attention: window attention through SDPA (``swinssl.fused_attention``), same weights.
        swinfuse: add SwinFUSE's domain-invariance module between the patch embedding and the first
            Swin stage. It acts on paired views only (``forward(x, paired_views=True)``) and lives
            outside ``swinViT``, so the exported encoder is a plain SwinUNETR encoder.
        legacy_patch_merging: MONAI <= 1.4's patch-merging order (to continue from weights trained with it).
        decoder: the inpainting head (:class:`ReconstructionDecoder`), or ``swinunetr``: SwinUNETR's own decoder
            (skip encoders ``encoder1-4``, ``encoder10``, up-sampling blocks ``decoder5..1``, a C-channel ``out``)
            under SwinUNETR's attribute names, as the DAE pretraining behind MONAI's ~50k-volume weights; its
            weights load from and into a SwinUNETR (:meth:`swinunetr_state_dict`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        feature_size: int = 48,
        projection_dim: int = 512,
        use_checkpoint: bool = False,
        decoder: str = "deconv",
        fused_attention: bool = True,
        swinfuse: bool = False,
        legacy_patch_merging: bool = False,
    ) -> None:
        super().__init__()
        backbone = SwinUNETR(in_channels=in_channels, out_channels=in_channels, feature_size=feature_size, use_checkpoint=use_checkpoint,
                             downsample=LegacyPatchMerging if legacy_patch_merging else "merging")
        self.swinViT = backbone.swinViT
        if fused_attention:
            fuse_window_attention(self.swinViT)
        dim = 16 * feature_size
        self.rotation_head = nn.Linear(dim, 4)
        self.contrastive_head = nn.Linear(dim, projection_dim)
        self.full_decoder = decoder == "swinunetr"
        if self.full_decoder:
            for name in (*DECODER_MODULES, "out"):
                setattr(self, name, getattr(backbone, name))
        else:
            self.reconstruction_head = ReconstructionDecoder(dim, in_channels, decoder)
        self.domain_invariance = DomainInvarianceModule(feature_size) if swinfuse else None
        self._pair_views = False
        if swinfuse:
            self.swinViT.patch_embed.register_forward_hook(self._cross_view_attention)

    def forward(self, x: torch.Tensor, paired_views: bool = False) -> SSLOutput:
        """x: (B, C, X, Y, Z) with X, Y, Z divisible by 32; with ``paired_views``, B = 2N laid out as
        [view 1 of N crops; view 2 of the same crops] (what the domain-invariance module needs)."""
        self._pair_views = paired_views
        x = x.contiguous()
        hidden = self.swinViT(x)  # five stages; the deepest is (B, 16F, X/32, Y/32, Z/32)
        deepest = hidden[4]
        pooled = deepest.mean(dim=(2, 3, 4))
        reconstruction = self._swinunetr_decoder(x, hidden) if self.full_decoder else self.reconstruction_head(deepest)
        return SSLOutput(self.rotation_head(pooled), self.contrastive_head(pooled), reconstruction, pooled)

    def _swinunetr_decoder(self, x: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor:
        """SwinUNETR.forward after its encoder: skip connections from the input and every stage -> (B, C, X, Y, Z)."""
        skips = [self.encoder1(x), self.encoder2(hidden[0]), self.encoder3(hidden[1]), self.encoder4(hidden[2])]
        features = self.decoder5(self.encoder10(hidden[4]), hidden[3])
        for block, skip in zip((self.decoder4, self.decoder3, self.decoder2, self.decoder1), reversed(skips)):
            features = block(features, skip)
        return self.out(features)

    def _cross_view_attention(self, module: nn.Module, args: tuple, tokens: torch.Tensor) -> torch.Tensor | None:
        """Forward hook on the patch embedding: (B, F, X/2, Y/2, Z/2) tokens through the module."""
        return self.domain_invariance(tokens) if self._pair_views else None

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights under SwinUNETR's key names (``swinViT.*``)."""
        return {f"swinViT.{k}": v.detach().clone() for k, v in self.swinViT.state_dict().items()}

    def swinunetr_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder and (``decoder="swinunetr"``) decoder under SwinUNETR's key names; ``out``, the reconstruction
        layer, is left out: fine-tuning gives SwinUNETR a new, class-specific one."""
        state = self.encoder_state_dict()
        if self.full_decoder:
            for name in DECODER_MODULES:
                state.update({f"{name}.{k}": v.detach().clone() for k, v in getattr(self, name).state_dict().items()})
        return state

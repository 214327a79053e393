"""The SSL model wraps MONAI's Swin transformer; its encoder weights load into SwinUNETR."""

import pytest
import torch
from monai.networks.nets import SwinUNETR
from safetensors.torch import load_file

from swinssl.ssl.model import DECODERS, ReconstructionDecoder, SSLModel
from swinssl.training.checkpoint import export_encoder


@pytest.mark.parametrize("in_channels, feature_size, size, decoder", [
    (1, 12, (32, 32, 32), "deconv"), (2, 24, (64, 32, 32), "upsample"), (1, 12, (64, 32, 32), "vae"),
    (2, 12, (32, 64, 32), "plain_deconv"), (1, 12, (32, 32, 64), "large_kernel_deconv")])
def test_heads_have_the_documented_shapes(in_channels, feature_size, size, decoder):
    model = SSLModel(in_channels, feature_size, projection_dim=16, decoder=decoder)
    out = model(torch.rand(2, in_channels, *size))
    assert out.rotation_logits.shape == (2, 4)
    assert out.projection.shape == (2, 16)
    assert out.reconstruction.shape == (2, in_channels, *size)
    out.reconstruction.mean().backward()
    assert model.swinViT.patch_embed.proj.weight.grad is not None


def test_encoder_is_monais_swin_transformer_not_a_copy():
    from monai.networks.nets.swin_unetr import SwinTransformer

    assert isinstance(SSLModel(1, 12).swinViT, SwinTransformer)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = SSLModel(1, 12, projection_dim=8)
    checkpointed = SSLModel(1, 12, projection_dim=8, use_checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(1, 1, 32, 32, 32)
    for model in (plain, checkpointed):
        model(x).reconstruction.square().mean().backward()
    g1 = plain.swinViT.layers1[0].blocks[0].attn.qkv.weight.grad
    g2 = checkpointed.swinViT.layers1[0].blocks[0].attn.qkv.weight.grad
    assert torch.allclose(g1, g2, atol=1e-6)


def test_exported_encoder_loads_into_swinunetr_and_gives_the_same_features(tmp_path):
    torch.manual_seed(0)
    model = SSLModel(1, 12, projection_dim=8).eval()
    export_encoder(model.encoder_state_dict(), tmp_path / "encoder.safetensors")
    weights = load_file(str(tmp_path / "encoder.safetensors"))
    segmenter = SwinUNETR(in_channels=1, out_channels=3, feature_size=12).eval()
    result = segmenter.load_state_dict(weights, strict=False)
    assert result.unexpected_keys == []
    assert not [k for k in result.missing_keys if k.startswith("swinViT.")]
    assert len(weights) == len(segmenter.swinViT.state_dict())
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(segmenter.swinViT(x)[4], model.swinViT(x)[4], atol=1e-4)  # plain vs fused attention


def test_reference_heads_match_ssl_head_layer_for_layer():
    """research-contributions SwinUNETR/Pretrain models/ssl_head.py, SSLHead(args, upsample=..., dim=768)."""
    layers = lambda decoder: [m for m in ReconstructionDecoder(768, 1, decoder).modules() if not isinstance(m, torch.nn.Sequential)]
    vae = layers("vae")
    convs = [(m.in_channels, m.out_channels, m.kernel_size) for m in vae if isinstance(m, torch.nn.Conv3d)]
    assert convs == [(768, 384, (3, 3, 3)), (384, 192, (3, 3, 3)), (192, 96, (3, 3, 3)), (96, 48, (3, 3, 3)), (48, 48, (3, 3, 3)), (48, 1, (1, 1, 1))]
    assert [type(m).__name__ for m in vae[:4]] == ["Conv3d", "InstanceNorm3d", "LeakyReLU", "Upsample"]
    assert not vae[1].affine and vae[2].negative_slope == 0.01 and vae[3].mode == "trilinear" and vae[3].scale_factor == 2
    assert sum(isinstance(m, torch.nn.Upsample) for m in vae) == 5
    plain = layers("plain_deconv")
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in plain] == [
        (768, 384, (2, 2, 2), (2, 2, 2)), (384, 192, (2, 2, 2), (2, 2, 2)), (192, 96, (2, 2, 2), (2, 2, 2)),
        (96, 48, (2, 2, 2), (2, 2, 2)), (48, 1, (2, 2, 2), (2, 2, 2))]
    (large,) = layers("large_kernel_deconv")
    assert (large.in_channels, large.out_channels, large.kernel_size, large.stride) == (768, 1, (32, 32, 32), (32, 32, 32))


def test_swinunetr_decoder_is_swinunetr_itself_under_its_own_names():
    """--decoder swinunetr: SSLModel's weights load strictly into MONAI's SwinUNETR (heads aside), whose forward then
    gives the same reconstruction."""
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    model = SSLModel(1, 12, 8, decoder="swinunetr", fused_attention=False).eval()
    reference = SwinUNETR(in_channels=1, out_channels=1, feature_size=12).eval()
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("rotation_head", "contrastive_head"))})
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x).reconstruction, reference(x), atol=1e-5)
    assert not any(k.startswith("out.") for k in model.swinunetr_state_dict())


def test_cli_choices_are_the_engines():
    from swinssl import cli
    from swinssl.finetune.sampler import CROP_SAMPLING
    from swinssl.inference.segment import PRECISIONS
    from swinssl.ssl.augment import CUTOUT_STYLES
    from swinssl.weights import PATCH_MERGING_ORDERS

    from swinssl.ssl.losses import INPAINT_LOSSES

    assert cli.DECODER_CHOICES == DECODERS and cli.PATCH_MERGING_CHOICES == PATCH_MERGING_ORDERS
    assert cli.INPAINT_LOSS_CHOICES == INPAINT_LOSSES
    assert cli.CUTOUT_STYLE_CHOICES == CUTOUT_STYLES and cli.CROP_SAMPLING_CHOICES == CROP_SAMPLING
    assert cli.PRECISION_CHOICES == PRECISIONS

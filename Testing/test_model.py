"""The SSL model wraps MONAI's Swin transformer; its encoder weights load into SwinUNETR."""

import pytest
import torch
from monai.networks.nets import SwinUNETR
from safetensors.torch import load_file

from swinssl.ssl.model import SSLModel
from swinssl.training.checkpoint import export_encoder


@pytest.mark.parametrize("in_channels, feature_size, size, decoder", [(1, 12, (32, 32, 32), "deconv"), (2, 24, (64, 32, 32), "upsample")])
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

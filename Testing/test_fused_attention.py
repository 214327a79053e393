"""Fused window attention is MONAI's window attention, computed differently: same values, same gradients, same weights."""

import copy

import pytest
import torch
from monai.networks.nets.swin_unetr import WindowAttention, compute_mask

from swinssl.fused_attention import FusedWindowAttention, fuse_window_attention
from swinssl.inference.sliding_window import sliding_window_labels
from swinssl.network import build_swin_unetr
from swinssl.ssl.model import SSLModel


def attention_pair(dim: int, heads: int) -> tuple[WindowAttention, WindowAttention]:
    torch.manual_seed(0)
    plain = WindowAttention(dim, heads, (7, 7, 7), qkv_bias=True)
    with torch.no_grad():  # the table starts near zero; make the bias matter
        plain.relative_position_bias_table.normal_(0, 1)
    fused = copy.deepcopy(plain)
    assert fuse_window_attention(fused) == 1 and isinstance(fused, FusedWindowAttention)
    return plain, fused


@pytest.mark.parametrize("dim, heads, samples, shifted", [(12, 3, 2, True), (24, 6, 3, False), (48, 3, 1, True)])
def test_outputs_and_gradients_equal_monais(dim, heads, samples, shifted):
    plain, fused = attention_pair(dim, heads)
    windows = 8  # a 14^3 token grid in 7^3 windows
    mask = compute_mask([14, 14, 14], (7, 7, 7), (3, 3, 3), None) if shifted else None
    x = torch.randn(samples * windows, 343, dim)
    outputs, grads = [], []
    for module in (plain, fused):
        tokens = x.clone().requires_grad_()
        out = module(tokens, mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out.detach())
        grads.append([tokens.grad, module.relative_position_bias_table.grad, module.qkv.weight.grad])
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # inference takes the fused kernel
        assert torch.allclose(plain(x, mask), fused(x, mask), atol=1e-5)


def test_no_window_attends_to_another_samples_windows():
    _, fused = attention_pair(12, 3)
    mask = compute_mask([14, 14, 14], (7, 7, 7), (3, 3, 3), None)
    x = torch.randn(16, 343, 12)
    changed = x.clone()
    changed[8:] = torch.randn(8, 343, 12)  # only the second sample changes
    with torch.no_grad():
        assert torch.equal(fused(x, mask)[:8], fused(changed, mask)[:8])


def test_state_dicts_are_interchangeable_and_whole_networks_agree():
    torch.manual_seed(0)
    plain = build_swin_unetr(1, 4, 12, fused_attention=False).eval()
    fused = build_swin_unetr(1, 4, 12).eval()
    assert fused.state_dict().keys() == plain.state_dict().keys()
    fused.load_state_dict(plain.state_dict())
    assert sum(isinstance(m, FusedWindowAttention) for m in fused.modules()) == 8
    x = torch.rand(2, 1, 64, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain(x), fused(x), atol=1e-4)


def test_pretraining_model_gradients_equal_the_plain_models():
    torch.manual_seed(0)
    plain = SSLModel(1, 12, projection_dim=8, fused_attention=False)
    fused = SSLModel(1, 12, projection_dim=8)
    fused.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 64, 64, 64)
    for model in (plain, fused):
        out = model(x)
        (out.reconstruction.square().mean() + out.rotation_logits.sum() + out.projection.square().sum()).backward()
    scale = max(float(p.grad.abs().max()) for p in plain.parameters())
    for (name, p), q in zip(plain.named_parameters(), fused.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5 * scale), name


def test_channels_last_windows_give_the_same_labels():
    torch.manual_seed(0)
    network = build_swin_unetr(1, 4, 12).eval()
    image = torch.rand(1, 96, 80, 64)
    standard = sliding_window_labels(image, copy.deepcopy(network), 64, 4, channels_last=False, accumulate_dtype=torch.float32)
    channels_last = sliding_window_labels(image, network, 64, 4, channels_last=True, accumulate_dtype=torch.float32)
    assert float((standard == channels_last).float().mean()) >= 0.9999
    assert len(torch.unique(standard)) > 1

"""Weight import from every supported key layout (synthetic checkpoints), legacy merging, refusal of pickles."""

import json
import os
import pickle

import pytest
import torch
from monai.networks.nets.swin_unetr import PatchMerging

from swinssl.network import LegacyPatchMerging, build_swin_unetr
from swinssl.weights import WeightsError, load_weights, read_state_dict

FEATURE = 12


def swinunetr_state(seed: int = 0, feature: int = FEATURE, classes: int = 3) -> dict:
    torch.manual_seed(seed)
    return build_swin_unetr(1, classes, feature).state_dict()


def encoder_count() -> int:
    return sum(1 for k in swinunetr_state() if k.startswith("swinViT.") and not k.endswith("relative_position_index"))


def assert_encoder_equal(network, state_with_swinvit_keys):
    for key, value in network.state_dict().items():
        if key.startswith("swinViT."):
            assert torch.equal(value, state_with_swinvit_keys[key]), key


def test_released_tang_layout(tmp_path):
    source = swinunetr_state(1)
    released = {}
    for key, value in source.items():
        if key.startswith("swinViT."):
            name = key.removeprefix("swinViT.").replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
            released[f"module.{name}"] = value
    released["module.rotation_head.weight"] = torch.zeros(4, 16 * FEATURE)
    released["module.conv.0.weight"] = torch.zeros(8, 8, 3, 3, 3)
    path = tmp_path / "model_swinvit.pt"
    torch.save({"epoch": 3, "state_dict": released}, path)
    network = build_swin_unetr(1, 3, FEATURE, legacy_patch_merging=True)
    report = load_weights(network, path)
    assert report.layout == "tang-ssl" and report.legacy_patch_merging
    all_encoder = sum(1 for k in source if k.startswith("swinViT."))  # with the index buffers
    assert report.encoder_matched == report.encoder_total == encoder_count() and report.matched == all_encoder
    assert report.missing == len(source) - all_encoder and report.unexpected == 0
    assert_encoder_equal(network, source)


def test_monai_50k_ssl_layout(tmp_path):
    source = swinunetr_state(2)
    ssl = {"encoder.mask_token": torch.zeros(1, 1, FEATURE), "encoder.norm.weight": torch.ones(16 * FEATURE),
           "decoder.0.weight": torch.zeros(3), "out.conv.conv.weight": torch.zeros(1, FEATURE, 1, 1, 1)}
    for key, value in source.items():
        if key.startswith("swinViT.patch_embed."):
            ssl["encoder." + key.removeprefix("swinViT.")] = value
        elif key.startswith("swinViT.layers"):
            stage, rest = key.removeprefix("swinViT.").split(".0.", 1)
            ssl[f"encoder.{stage}.0.0.{rest}"] = value
    path = tmp_path / "ssl_pretrained_weights.pth"
    torch.save({"model": ssl}, path)
    network = build_swin_unetr(1, 3, FEATURE)
    report = load_weights(network, path)
    assert report.layout == "monai-ssl" and report.legacy_patch_merging
    assert report.encoder_matched == encoder_count() and report.unexpected == 0
    assert_encoder_equal(network, source)


def test_model_zoo_bundle_folder_layout(tmp_path):
    bundle = tmp_path / "swin_unetr_btcv_segmentation"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": {"_target_": "SwinUNETR", "feature_size": FEATURE}}))
    source = swinunetr_state(3, classes=14)
    torch.save(source, bundle / "models" / "model.pt")
    network = build_swin_unetr(1, 14, FEATURE)
    report = load_weights(network, bundle / "models" / "model.pt")
    assert report.layout == "swinunetr" and report.matched == len(source) and report.missing == 0
    other_classes = build_swin_unetr(1, 4, FEATURE)  # fine-tuning to other classes: all but the output layer
    report = load_weights(other_classes, bundle / "models" / "model.pt")
    assert report.shape_mismatch == 2 and report.matched == len(source) - 2


def test_our_pretraining_export_layout(tmp_path):
    from swinssl.ssl.model import SSLModel
    from swinssl.training.checkpoint import export_encoder

    model = SSLModel(1, FEATURE, projection_dim=8)
    export_encoder(model.encoder_state_dict(), tmp_path / "encoder.safetensors")
    torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "checkpoint.pt")
    for name, layout in (("encoder.safetensors", "swinunetr"), ("checkpoint.pt", "swinssl-pretrain")):
        network = build_swin_unetr(1, 3, FEATURE)
        report = load_weights(network, tmp_path / name)
        assert report.layout == layout and report.encoder_matched == encoder_count()
        assert_encoder_equal(network, model.encoder_state_dict())


def test_loading_nothing_into_the_encoder_fails_loudly(tmp_path):
    torch.save({"state_dict": swinunetr_state(feature=24)}, tmp_path / "wide.pt")
    with pytest.raises(WeightsError, match="no usable encoder weights"):
        load_weights(build_swin_unetr(1, 3, FEATURE), tmp_path / "wide.pt")


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_a_checkpoint_carrying_a_pickle_payload_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with (tmp_path / "evil.pt").open("wb") as stream:
        torch.save({"state_dict": {"swinViT.x": torch.zeros(1)}, "trap": Payload()}, stream, pickle_module=pickle)
    with pytest.raises(WeightsError, match="evil.pt"):
        read_state_dict(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned_marker").exists()


def old_order_merging(x: torch.Tensor) -> torch.Tensor:
    """MONAI <= 1.4's concatenation, written out by hand (offsets 5 and 6 repeat 2 and 3)."""
    parts = [x[:, 0::2, 0::2, 0::2], x[:, 1::2, 0::2, 0::2], x[:, 0::2, 1::2, 0::2], x[:, 0::2, 0::2, 1::2],
             x[:, 1::2, 0::2, 1::2], x[:, 0::2, 1::2, 0::2], x[:, 0::2, 0::2, 1::2], x[:, 1::2, 1::2, 1::2]]
    return torch.cat(parts, -1)


def test_legacy_patch_merging_reproduces_the_old_order():
    torch.manual_seed(0)
    legacy = LegacyPatchMerging(dim=6, spatial_dims=3)
    current = PatchMerging(dim=6, spatial_dims=3)
    current.load_state_dict(legacy.state_dict())
    x = torch.randn(2, 4, 6, 8, 6)
    expected = legacy.reduction(legacy.norm(old_order_merging(x)))
    assert torch.allclose(legacy(x), expected, atol=1e-6)
    assert not torch.allclose(current(x), expected, atol=1e-3)  # MONAI >= 1.5 order differs
    network = build_swin_unetr(1, 3, FEATURE, legacy_patch_merging=True)
    assert isinstance(network.swinViT.layers1[0].downsample, LegacyPatchMerging)

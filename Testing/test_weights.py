"""Weight import from every public layout and the patch-merging order chosen for each.

The files are written in the layouts the public code reads and writes (key lists below come from MONAI's
``SwinUNETR.load_from`` and ``filter_swinunetr``, the MONAI SSL tutorial, and the checkpoint code of
research-contributions SwinUNETR/BTCV and SwinUNETR/Pretrain), and the oracle is MONAI's own loading code
on a network with MONAI <= 1.4's patch merging, the order all of these weights were trained with. An import
through each of our routes must reproduce the oracle's encoder features; with the other order they differ.
"""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import PatchMerging, filter_swinunetr
from monai.networks.utils import copy_model_state
from safetensors.torch import load_file

from swinssl.finetune.train import run_finetune
from swinssl.network import LegacyPatchMerging, build_swin_unetr
from swinssl.ssl.model import SSLModel
from swinssl.training.checkpoint import export_encoder
from swinssl.weights import WeightsError, choose_patch_merging, load_weights, provenance, read_state_dict, read_weights
from test_finetune import labelled_phantoms, tiny_finetune

FEATURE = 12
# MONAI 1.4 SwinTransformerBlock.load_from: block_names; SwinUNETR.load_from: patch_embed and downsample keys.
BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.relative_position_index", "attn.qkv.weight",
              "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
              "mlp.fc2.weight", "mlp.fc2.bias")
DOWNSAMPLE_KEYS = ("reduction.weight", "norm.weight", "norm.bias")


def legacy_network(seed: int = 0, classes: int = 3) -> SwinUNETR:
    """MONAI's SwinUNETR with MONAI <= 1.4 patch merging and plain (unfused) attention: the oracle."""
    torch.manual_seed(seed)
    return SwinUNETR(in_channels=1, out_channels=classes, feature_size=FEATURE, downsample=LegacyPatchMerging).eval()


def features(network: torch.nn.Module) -> torch.Tensor:
    """The deepest encoder stage on a fixed input: (1, 16F, 2, 2, 2)."""
    torch.manual_seed(123)
    with torch.no_grad():
        return network.eval().swinViT(torch.rand(1, 1, 64, 64, 64))[4]


def assert_same_features(ours: torch.nn.Module, oracle: torch.nn.Module) -> None:
    expected = features(oracle)
    assert torch.allclose(features(ours), expected, atol=1e-4), "encoder features differ from MONAI's loader"
    other = build_swin_unetr(1, 3, FEATURE, legacy_patch_merging=not isinstance(ours.swinViT.layers1[0].downsample, LegacyPatchMerging))
    other.swinViT.load_state_dict(ours.swinViT.state_dict())
    assert (features(other) - expected).abs().mean() > 0.05 * expected.abs().mean()  # the order matters: the test can fail


def import_for_finetuning(path: Path, override: str | None = None) -> tuple[SwinUNETR, object]:
    """The fine-tuning route: read once, choose the order, build, load."""
    source = read_weights(path)
    merging = choose_patch_merging(source, override)
    network = build_swin_unetr(1, 3, FEATURE, merging[0] == "legacy")
    return network, load_weights(network, source, merging)


def shaped_like(name: str, reference: dict) -> torch.Tensor:
    """A random tensor shaped like MONAI's tensor for a released ``module.*`` key (fc1/fc2 are MONAI's linear1/2)."""
    monai_name = "swinViT." + name.removeprefix("module.").replace("mlp.fc1", "mlp.linear1").replace("mlp.fc2", "mlp.linear2")
    value = reference[monai_name]
    return value.clone() if name.endswith("relative_position_index") else torch.randn(value.shape) * 0.1 + (1.0 if "norm" in name and name.endswith("weight") else 0.0)


def write_tang_release(path: Path) -> Path:
    """model_swinvit.pt: {"state_dict": {...}} with exactly the keys SwinUNETR.load_from reads, plus the final norm."""
    reference = build_swin_unetr(1, 3, FEATURE).state_dict()
    keys = ["module.patch_embed.proj.weight", "module.patch_embed.proj.bias"]
    for layer in range(1, 5):
        keys += [f"module.layers{layer}.0.blocks.{block}.{key}" for block in (0, 1) for key in BLOCK_KEYS]
        keys += [f"module.layers{layer}.0.downsample.{key}" for key in DOWNSAMPLE_KEYS]
    torch.manual_seed(7)
    state = {key: shaped_like(key, reference) for key in keys}
    state["module.norm.weight"], state["module.norm.bias"] = torch.ones(16 * FEATURE), torch.zeros(16 * FEATURE)
    torch.save({"state_dict": state}, path)
    return path


def test_released_tang_encoder_through_monai_load_from_and_ours(tmp_path):
    path = write_tang_release(tmp_path / "model_swinvit.pt")
    oracle = legacy_network()
    oracle.load_from(torch.load(path, weights_only=True))
    network, report = import_for_finetuning(path)
    assert report.layout == "tang-ssl, DDP" and report.patch_merging == "legacy" and "MONAI < 1.5" in report.patch_merging_reason
    assert report.encoder_matched == report.encoder_total and report.unexpected == 0
    assert_same_features(network, oracle)


def write_monai_50k_release(path: Path) -> Path:
    """ssl_pretrained_weights.pth in the layout MONAI's tutorial and ``filter_swinunetr`` describe: {"model": {...}} holding
    the whole pretrained SwinUNETR. Encoder keys are ``encoder.`` + the stage with an extra ``.0`` (filter_swinunetr keeps
    key[8:18] and drops key[18:20]); ``encoder.mask_token``, ``encoder.norm.*`` and the 1-channel reconstruction
    ``out.conv.conv.*`` are the keys the tutorial deletes; every other key is loaded by its name, strictly, into SwinUNETR."""
    torch.manual_seed(9)
    pretrained = SwinUNETR(in_channels=1, out_channels=1, feature_size=FEATURE, downsample=LegacyPatchMerging).state_dict()
    ssl = {"encoder.mask_token": torch.zeros(1, 1, FEATURE), "encoder.norm.weight": torch.ones(16 * FEATURE),
           "encoder.norm.bias": torch.zeros(16 * FEATURE)}
    for key, value in pretrained.items():
        value = value if key.endswith("relative_position_index") else torch.randn(value.shape) * 0.1 + 1.0 * ("norm" in key and key.endswith("weight"))
        if key.startswith("swinViT.patch_embed."):
            ssl["encoder." + key.removeprefix("swinViT.")] = value
        elif key.startswith("swinViT."):
            stage, rest = key.removeprefix("swinViT.").split(".0.", 1)  # layers1.0.blocks.0... -> encoder.layers1.0.0.blocks.0...
            ssl[f"encoder.{stage}.0.0.{rest}"] = value
        elif key.startswith("out."):
            ssl["out.conv.conv." + key.rsplit(".", 1)[1]] = value
        else:
            ssl[key] = value
    torch.save({"model": ssl}, path)
    return path


@pytest.mark.parametrize("classes", [3, 1])
def test_monai_50k_ssl_weights_every_tensor_as_monai_copy_model_state_loads_them(tmp_path, classes):
    """MONAI's route (copy_model_state + filter_swinunetr) and ours must give the same SwinUNETR, tensor for tensor:
    encoder and decoder from the file, ``out`` too when its shape fits (one class), else left as built."""
    path = write_monai_50k_release(tmp_path / "ssl_pretrained_weights.pth")
    raw = torch.load(path, weights_only=True)["model"]
    assert all(filter_swinunetr(k, v) is None or filter_swinunetr(k, v)[0].startswith("swinViT.") for k, v in raw.items())
    torch.manual_seed(1)
    oracle = SwinUNETR(in_channels=1, out_channels=classes, feature_size=FEATURE, downsample=LegacyPatchMerging)
    built = {k: v.clone() for k, v in oracle.state_dict().items()}
    _, monai_loaded, _ = copy_model_state(oracle, raw, filter_func=filter_swinunetr)
    source = read_weights(path)
    merging = choose_patch_merging(source)
    torch.manual_seed(1)
    ours = build_swin_unetr(1, classes, FEATURE, merging[0] == "legacy")
    report = load_weights(ours, source, merging)
    expected, actual = oracle.state_dict(), ours.state_dict()
    assert sorted(expected) == sorted(actual)
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert different == [], f"{len(different)} tensors differ from MONAI's loader, e.g. {different[:3]}"
    changed = {k for k in expected if not torch.equal(expected[k], built[k])}
    assert {k for k in changed} <= set(monai_loaded) and any(k.startswith("decoder1.") for k in changed)
    assert report.layout == "monai-ssl" and report.patch_merging == "legacy"
    assert (report.encoder_matched, report.decoder_matched, report.decoder_total) == (report.encoder_total, 31, 31)
    assert report.output_loaded == (classes == 1) and len(monai_loaded) == report.matched == (159 if classes == 1 else 157)
    assert "decoder 31/31" in report.summary()
    if classes == 3:
        assert_same_features(ours, oracle)
        torch.manual_seed(1)
        ablation = build_swin_unetr(1, classes, FEATURE, True)
        fresh = {k: v.clone() for k, v in ablation.state_dict().items()}
        report = load_weights(ablation, source, merging, encoder_only=True)
        assert report.decoder_matched == 0 and "decoder not loaded (--encoder-only)" in report.summary()
        assert all(torch.equal(v, fresh[k]) for k, v in ablation.state_dict().items() if not k.startswith("swinViT."))


def test_pretraining_from_the_monai_50k_weights_starts_from_their_whole_reconstruction_network(tmp_path):
    """pretrain --init monai-ssl-50k --decoder swinunetr: encoder, decoder and the 1-channel out, as MONAI's loader gives them."""
    from swinssl.training.pretrain import load_pretraining_weights

    path = write_monai_50k_release(tmp_path / "ssl_pretrained_weights.pth")
    source = read_weights(path)
    model = SSLModel(1, FEATURE, projection_dim=8, decoder="swinunetr", legacy_patch_merging=True)
    report = load_pretraining_weights(model, source, choose_patch_merging(source))
    assert (report["decoder_matched"], report["decoder_total"], report["encoder_matched"]) == (31, 31, report["encoder_total"])
    oracle = SwinUNETR(in_channels=1, out_channels=1, feature_size=FEATURE, downsample=LegacyPatchMerging)
    copy_model_state(oracle, torch.load(path, weights_only=True)["model"], filter_func=filter_swinunetr)
    ours = model.state_dict()
    assert all(torch.equal(ours[key], value) for key, value in oracle.state_dict().items())


def test_btcv_finetuned_checkpoint_outside_a_bundle_is_legacy(tmp_path):
    """research-contributions SwinUNETR/BTCV trainer.save_checkpoint: {"epoch", "best_acc", "state_dict"}; test.py loads
    ["state_dict"] strictly into SwinUNETR. It records no MONAI version and predates MONAI 1.5."""
    trained = legacy_network(3)
    path = tmp_path / "swin_unetr.tiny_5000ep_f12_lr2e-4_pretrained.pt"
    torch.save({"epoch": 4999, "best_acc": 0.7, "state_dict": trained.state_dict()}, path)
    oracle = legacy_network(4)
    oracle.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    network, report = import_for_finetuning(path)
    assert report.layout == "swinunetr" and report.patch_merging == "legacy" and "--patch-merging v1.5" in report.patch_merging_reason
    assert report.matched == len(trained.state_dict()) and report.missing == 0
    assert_same_features(network, oracle)
    forced, report = import_for_finetuning(path, override="v1.5")
    assert report.patch_merging == "v1.5" and report.patch_merging_reason.startswith("set explicitly (--patch-merging")
    assert isinstance(forced.swinViT.layers1[0].downsample, PatchMerging) and not isinstance(forced.swinViT.layers1[0].downsample, LegacyPatchMerging)


@pytest.mark.parametrize("data_parallel", [False, True])
def test_reference_pretraining_checkpoint_single_gpu_and_ddp(tmp_path, data_parallel):
    """SwinUNETR/Pretrain main.py: {"global_step", "state_dict": SSLHead.state_dict(), "optimizer"}; SSLHead holds
    swinViT, rotation_head, contrastive_head and conv (the vae head); under DDP every key starts with module."""
    trained = legacy_network(5)
    head = {f"swinViT.{k}": v for k, v in trained.swinViT.state_dict().items()}
    head.update({"rotation_head.weight": torch.zeros(4, 16 * FEATURE), "rotation_head.bias": torch.zeros(4),
                 "contrastive_head.weight": torch.zeros(512, 16 * FEATURE), "contrastive_head.bias": torch.zeros(512),
                 "conv.0.weight": torch.zeros(8 * FEATURE, 16 * FEATURE, 3, 3, 3), "conv.0.bias": torch.zeros(8 * FEATURE)})
    if data_parallel:
        head = {f"module.{k}": v for k, v in head.items()}
    path = tmp_path / "model_bestValRMSE.pt"
    torch.save({"global_step": 500, "state_dict": head, "optimizer": {}}, path)
    network, report = import_for_finetuning(path)
    assert report.layout == "reference-ssl" + (", DDP" if data_parallel else "") and report.patch_merging == "legacy"
    assert report.encoder_matched == report.encoder_total
    assert_same_features(network, trained)


def test_model_zoo_bundle_order_follows_its_monai_version(tmp_path):
    bundle = tmp_path / "swin_unetr_btcv_segmentation"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    trained = legacy_network(6, classes=14)
    torch.save(trained.state_dict(), bundle / "models" / "model.pt")  # CheckpointSaver with a single "model" entry
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "0.5.6", "monai_version": "1.4.0"}))
    source = read_weights(bundle / "models" / "model.pt")
    order, why = choose_patch_merging(source)
    assert order == "legacy" and "monai_version 1.4.0" in why
    network = build_swin_unetr(1, 14, FEATURE, True)
    load_weights(network, source, (order, why))
    assert_same_features(network, trained)
    # A newer monai_version names the MONAI the bundle supports, not the one that trained its weights (the BTCV
    # bundle's weights date from MONAI 1.2 while its metadata says 1.4.0): still legacy, unless the weights say otherwise.
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "0.6.0", "monai_version": "1.5.1"}))
    order, why = choose_patch_merging(read_weights(bundle / "models" / "model.pt"))
    assert order == "legacy" and "--patch-merging v1.5" in why


def test_a_package_finetuned_from_legacy_weights_keeps_legacy_as_init(tmp_path):
    """Round trip: legacy weights -> fine-tuning -> package (records legacy) -> --init of a new fine-tuning."""
    data = labelled_phantoms(tmp_path / "data")
    tang = write_tang_release(tmp_path / "model_swinvit.pt")
    assert run_finetune(tiny_finetune(data, tmp_path / "first", init=str(tang), steps=1, val_every=1)) == 0
    meta = json.loads((tmp_path / "first" / "model.json").read_text(encoding="utf-8"))
    assert meta["patch_merging"] == "legacy" and meta["legacy_patch_merging"] is True and meta["monai_version"]
    assert load_file(str(tmp_path / "first" / "model.safetensors")) is not None
    network, report = import_for_finetuning(tmp_path / "first" / "model.safetensors")
    assert report.patch_merging == "legacy" and "model.json" in report.patch_merging_reason
    oracle = build_swin_unetr(1, 3, FEATURE, legacy_patch_merging=True)
    oracle.load_state_dict({k: v for k, v in load_file(str(tmp_path / "first" / "model.safetensors")).items() if k.startswith("swinViT.")}, strict=False)
    assert_same_features(network, oracle)
    assert run_finetune(tiny_finetune(data, tmp_path / "second", init=str(tmp_path / "first"), steps=1, val_every=1)) == 0
    assert json.loads((tmp_path / "second" / "model.json").read_text(encoding="utf-8"))["patch_merging"] == "legacy"


def test_our_pretraining_outputs_record_their_order_and_load_with_it(tmp_path):
    model = SSLModel(1, FEATURE, projection_dim=8)
    export_encoder(model.encoder_state_dict(), tmp_path / "encoder.safetensors", provenance("v1.5"))
    torch.save({"model": model.state_dict(), "step": 3, "swinssl_version": "0.1.0"}, tmp_path / "checkpoint.pt")  # an earlier swinssl's
    for name, layout in (("encoder.safetensors", "swinunetr"), ("checkpoint.pt", "swinssl-pretrain")):
        network, report = import_for_finetuning(tmp_path / name)
        assert report.layout == layout and report.patch_merging == "v1.5" and report.encoder_matched == report.encoder_total
        for key, value in model.encoder_state_dict().items():
            assert torch.equal(network.state_dict()[key], value), key


def test_loading_nothing_into_the_encoder_fails_loudly(tmp_path):
    torch.manual_seed(0)
    torch.save({"state_dict": build_swin_unetr(1, 3, 24).state_dict()}, tmp_path / "wide.pt")
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

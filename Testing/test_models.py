"""swinssl models list | import: packages, MONAI model-zoo bundles and fine-tuning checkpoints become packages."""

import json
from pathlib import Path

import torch

from conftest import phantom_ct, run_cli, write_volume
from swinssl.finetune.train import run_finetune
from swinssl.models import import_model, list_packages
from swinssl.network import build_swin_unetr
from swinssl.package import load_package
from test_finetune import labelled_phantoms, tiny_finetune


def write_bundle(folder: Path) -> Path:
    """A bundle shaped like swin_unetr_btcv_segmentation, with a tiny network (feature 12, 3 organs)."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    metadata = {"name": "tiny_btcv", "version": "0.5.6", "description": "test bundle", "monai_version": "1.4.0",
                "network_data_format": {"outputs": {"pred": {"num_channels": 4, "channel_def": {"0": "background", "1": "spleen", "2": "rkid", "3": "lkid"}}}}}
    inference = {
        "network_def": {"_target_": "SwinUNETR", "spatial_dims": 3, "in_channels": 1, "out_channels": 4, "feature_size": 12},
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [3.0, 3.0, 3.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -175, "a_max": 250, "b_min": 0.0, "b_max": 1.0, "clip": True}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 64], "sw_batch_size": 4, "overlap": 0.5},
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (folder / "configs" / "inference.json").write_text(json.dumps(inference))
    torch.manual_seed(0)
    torch.save(build_swin_unetr(1, 4, 12).state_dict(), folder / "models" / "model.pt")
    return folder


def test_bundle_import_keeps_labels_window_spacing_and_marks_legacy_merging(tmp_path):
    destination = import_model(write_bundle(tmp_path / "tiny_btcv"), tmp_path / "models")
    package = load_package(destination)
    assert package.labels.names == ["spleen", "rkid", "lkid"] and package.roi == 64 and package.feature_size == 12
    assert package.spacing == (3.0, 3.0, 3.0) and package.channels[0].window == (-175.0, 250.0)
    assert package.patch_merging == "legacy" and package.monai_version == "1.4.0"  # the bundle's MONAI predates 1.5
    assert "monai_version 1.4.0" in package.training["patch_merging"]
    weights = torch.load(tmp_path / "tiny_btcv" / "models" / "model.pt", weights_only=True)
    rebuilt = package.build_network().state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in weights.items())
    volume = write_volume(tmp_path / "ct.nii.gz", phantom_ct((30, 40, 40)), spacing=(2.0, 2.0, 2.0))
    result = run_cli("segment", "--model", str(destination), "--input", str(volume), "--output", str(tmp_path / "o.seg.nrrd"), "--device", "cpu")
    assert result.returncode == 0, result.stderr


def test_finetune_run_and_checkpoint_import_and_listing(tmp_path):
    data = labelled_phantoms(tmp_path / "data")
    run_finetune(tiny_finetune(data, tmp_path / "organs", steps=1, val_every=1))
    models = tmp_path / "models"
    result = run_cli("models", "import", str(tmp_path / "organs"), "--models-dir", str(models))
    assert result.returncode == 0, result.stderr
    import_model(tmp_path / "organs" / "training" / "checkpoint.pt", models, name="organs-last")
    listed = {p.name: p for p in list_packages(models)}
    assert set(listed) == {"organs", "organs-last"}
    assert listed["organs-last"].labels.names == ["liver", "spleen"] and not (models / "organs" / "training").exists()
    assert "organs-last" in run_cli("models", "list", "--models-dir", str(models)).stdout
    result = run_cli("models", "import", str(tmp_path / "data"), "--models-dir", str(models))
    assert result.returncode == 1 and "not a model package, MONAI bundle" in result.stderr


def test_malformed_model_json_files_are_skipped_one_by_one_and_named_in_the_log(tmp_path, caplog):
    """Issue 25 item 6: one bad model.json (null roi, a list, unreadable) broke every listing (the Segment module's
    setup, enter and Segment click). Each bad package is left out and named in the log; the good one is listed."""
    import logging
    import shutil

    demo = Path(__file__).resolve().parents[1] / "swinssl" / "resources" / "demo_organs"
    models = tmp_path / "models"
    for name in ("good", "null-roi", "a-list", "unreadable"):
        shutil.copytree(demo, models / name)
    meta = json.loads((demo / "model.json").read_text(encoding="utf-8"))
    (models / "null-roi" / "model.json").write_text(json.dumps({**meta, "name": "null roi", "roi": None}))
    (models / "a-list" / "model.json").write_text(json.dumps([meta]))
    (models / "unreadable" / "model.json").unlink()
    (models / "unreadable" / "model.json").mkdir()  # read_text() raises IsADirectoryError (an OSError), as an unreadable file would
    with caplog.at_level(logging.WARNING, logger="swinssl.models"):
        assert [package.path.name for package in list_packages(models)] == ["good"]
    skipped = sorted(record.getMessage() for record in caplog.records)
    assert len(skipped) == 3 and all(message.startswith("skipped model package ") for message in skipped)
    for name in ("a-list", "null-roi", "unreadable"):
        assert any(str(models / name / "model.json") in message for message in skipped), (name, skipped)

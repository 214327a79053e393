"""Pretraining runs on the CPU: exact resume, stop on signals, SIGKILL safety, previews, bad files."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from conftest import TINY_MODEL, phantom_ct, run_cli, write_volume
from swinssl.events import read_events
from swinssl.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from swinssl.training.config import PretrainConfig
from swinssl.training.pretrain import run_pretraining
from swinssl.training.signals import EXIT_OK, EXIT_STOPPED


def phantom_folder(root: Path) -> Path:
    for seed in range(2):
        write_volume(root / f"ct_{seed}.nii.gz", phantom_ct((36, 40, 44), seed=seed), spacing=(2.0, 2.0, 2.0))
    return root


def tiny_config(data: Path, out: Path, **changes) -> PretrainConfig:
    settings = dict(
        data=[str(data)], out=str(out), cache_dir=str(out.parent / "cache"), roi=32, feature_size=12, projection_dim=32,
        batch_size=2, steps=10, warmup_steps=2, lr=1e-3, checkpoint_every=100, device="cpu", events=str(out / "events.jsonl"),
    )
    settings.update(changes)
    return PretrainConfig(**settings)


def test_ten_steps_equal_five_plus_resume_plus_five(tmp_path):
    data = phantom_folder(tmp_path / "data")
    assert run_pretraining(tiny_config(data, tmp_path / "straight")) == EXIT_OK
    assert run_pretraining(tiny_config(data, tmp_path / "split", stop_at=5)) == EXIT_STOPPED
    stopped = [e for e in read_events(tmp_path / "split" / "events.jsonl") if e["event"] == "stopped"]
    assert stopped and stopped[0]["step"] == 5
    assert run_pretraining(tiny_config(data, tmp_path / "split"), resume=True) == EXIT_OK

    straight = load_checkpoint(tmp_path / "straight" / CHECKPOINT_NAME)
    split = load_checkpoint(tmp_path / "split" / CHECKPOINT_NAME)
    assert straight["step"] == split["step"] == 10
    for key, value in straight["model"].items():
        assert torch.equal(value, split["model"][key]), key
    assert straight["history"] == split["history"]
    resumed_start = [e for e in read_events(tmp_path / "split" / "events.jsonl") if e["event"] == "start"][-1]
    assert resumed_start["resumed"] and resumed_start["start_step"] == 5
    # the ln(2B-1) warning (B = 2 crops: ln 3) appears exactly when the contrastive loss sat there for the first 10 steps
    log = read_events(tmp_path / "straight" / "events.jsonl")
    flat = all(abs(e["losses"]["contrast"] - math.log(3)) <= 0.01 * math.log(3) for e in log if e["event"] == "progress")
    warned = [e for e in log if e["event"] == "warning" and "ln(2B-1)" in e["reason"]]
    assert len(warned) == int(flat)


def test_masked_inpainting_loss_is_the_l1_over_the_cut_out_voxels_only():
    from swinssl.ssl.losses import LossWeights, pretext_losses

    torch.manual_seed(0)
    target, reconstruction = torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8)
    mask = torch.zeros(2, 1, 8, 8, 8, dtype=torch.bool)
    mask[:, :, 2:5, 2:6, 1:4] = True
    args = (torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64), (torch.rand(1, 4), torch.rand(1, 4)), reconstruction, target, LossWeights())
    masked = pretext_losses(*args, inpaint_mask=mask)["inpaint"]
    assert torch.isclose(masked, (reconstruction - target).abs()[mask].mean())
    assert torch.isclose(pretext_losses(*args)["inpaint"], (reconstruction - target).abs().mean())


def test_a_different_seed_gives_different_weights(tmp_path):
    data = phantom_folder(tmp_path / "data")
    run_pretraining(tiny_config(data, tmp_path / "a", steps=2))
    run_pretraining(tiny_config(data, tmp_path / "b", steps=2, seed=1))
    a = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)["model"]
    b = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["model"]
    assert not torch.equal(a["rotation_head.weight"], b["rotation_head.weight"])


def test_empty_or_all_bad_data_stops_at_once_with_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("pretrain", "--data", str(empty), "--out", str(tmp_path / "run"), *TINY_MODEL)
    assert result.returncode == 1 and "no volumes found" in result.stderr and str(empty) in result.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.nii.gz").write_bytes(b"garbage")
    events = tmp_path / "events.jsonl"
    result = run_cli("pretrain", "--data", str(bad), "--out", str(tmp_path / "run2"), "--events", str(events), *TINY_MODEL)
    assert result.returncode == 1 and "none of the 1 volume(s)" in result.stderr
    kinds = [(e["event"], e.get("file")) for e in read_events(events)]
    assert ("warning", str(bad / "broken.nii.gz")) in kinds and kinds[-1][0] == "error"


def start_background_run(tmp_path: Path, data: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "run"
    events = out / "events.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "swinssl", "pretrain", "--data", str(data), "--out", str(out), "--events", str(events),
         "--cache-dir", str(tmp_path / "cache"), "--steps", "1000", "--batch-size", "2", *TINY_MODEL, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    return process, events


def wait_for_event(events: Path, kind: str, process: subprocess.Popen, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists():
            found = [e for e in read_events(events) if e["event"] == kind]
            if found:
                return found[-1]
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event within {timeout} s")


def test_sigterm_finishes_the_step_checkpoints_and_resume_continues(tmp_path):
    data = phantom_folder(tmp_path / "data")
    process, events = start_background_run(tmp_path, data)
    wait_for_event(events, "progress", process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == EXIT_STOPPED
    stopped = wait_for_event(events, "stopped", process)
    assert stopped["reason"] == "SIGTERM"
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert checkpoint["step"] == stopped["step"] >= 1

    result = run_cli("pretrain", "--out", str(tmp_path / "run"), "--resume", "--steps", str(stopped["step"] + 1))
    assert result.returncode == EXIT_OK, result.stderr
    restarted = [e for e in read_events(events) if e["event"] == "start"][-1]
    assert restarted["start_step"] == stopped["step"]
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["step"] == stopped["step"] + 1


def test_sigint_also_stops_gracefully(tmp_path):
    data = phantom_folder(tmp_path / "data")
    process, events = start_background_run(tmp_path, data)
    wait_for_event(events, "progress", process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == EXIT_STOPPED
    assert wait_for_event(events, "stopped", process)["reason"] == "SIGINT"


def test_sigkill_leaves_the_last_checkpoint_loadable(tmp_path):
    data = phantom_folder(tmp_path / "data")
    process, events = start_background_run(tmp_path, data, "--checkpoint-every", "1")
    wait_for_event(events, "checkpoint", process)
    time.sleep(1.0)  # most likely inside the next step or its checkpoint write
    process.kill()
    process.wait(timeout=30)
    last = [e for e in read_events(events) if e["event"] == "checkpoint"][-1]
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert checkpoint["step"] >= last["step"]
    assert run_cli("pretrain", "--out", str(tmp_path / "run"), "--resume", "--steps", str(checkpoint["step"] + 1)).returncode == EXIT_OK


def test_resume_refuses_to_change_the_model(tmp_path):
    data = phantom_folder(tmp_path / "data")
    run_pretraining(tiny_config(data, tmp_path / "run", steps=1))
    result = run_cli("pretrain", "--out", str(tmp_path / "run"), "--resume", "--roi", "64")
    assert result.returncode == 1 and "cannot change --roi" in result.stderr


def test_previews_carry_the_crop_geometry_and_match_the_source(tmp_path):
    data = phantom_folder(tmp_path / "data")
    config = tiny_config(data, tmp_path / "run", steps=2, preview_every=2)
    run_pretraining(config)
    preview = [e for e in read_events(tmp_path / "run" / "events.jsonl") if e["event"] == "preview"]
    assert len(preview) == 1 and preview[0]["step"] == 2
    paths = preview[0]["paths"]
    assert Path(paths["png"]).stat().st_size > 1000
    original, masked, recon = (sitk.ReadImage(paths[k]) for k in ("original", "masked", "reconstruction"))
    assert original.GetSize() == masked.GetSize() == recon.GetSize() == (32, 32, 32)
    assert original.GetSpacing() == (2.0, 2.0, 2.0) and recon.GetOrigin() == original.GetOrigin()
    # The preview's voxel at its centre index is the source CT (windowed) at the same physical point.
    source = sitk.ReadImage(str(data / "ct_0.nii.gz"))
    centre = original.TransformIndexToPhysicalPoint((16, 16, 16))
    hu = source[source.TransformPhysicalPointToIndex(centre)]
    assert abs(original[16, 16, 16] - np.clip((hu + 1000) / 2000, 0, 1)) < 2e-3
    difference = sitk.GetArrayFromImage(masked) != sitk.GetArrayFromImage(original)
    assert 0.25 <= difference.mean() <= 0.3 + 0.25**3  # fixed 30 % cutout
    holes = sitk.GetArrayFromImage(sitk.ReadImage(paths["holes"])).astype(bool)
    assert (holes == difference).all()  # the holes file marks exactly the cut-out voxels
    event = preview[0]
    assert event["unit"] == "HU" and event["holes"]["voxels"] == event["baseline"]["voxels"] > 0
    assert event["baseline"]["l1"] > 0 and "interpolation" in event["baseline"]["method"]
    assert event["beats_interpolation"] in (True, False, None)


def test_hole_metrics_score_inpainting_not_a_body_mean_fill_or_copied_noise(shared_data):
    """On real CT with the preview's cutout: the old body-wide r gave a mean fill 0.85; inside the holes a flat fill
    has no r and a large L1, copying the noise scores nothing, and the no-learning interpolation does better than both."""
    from swinssl.ssl.augment import CutoutSettings, inner_cutout
    from swinssl.training.preview import body_mask, hole_metrics, interpolate_holes

    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"))).astype(np.float32)
    original = np.clip((ct[:, 20:84, 30:94] + 1000) / 2000, 0, 1)  # (K, J, I) 30 x 64 x 64 through the abdomen
    masked, cut = inner_cutout(torch.from_numpy(original)[None, None], torch.Generator().manual_seed(0), CutoutSettings(0.3, 0.3, style="exact"))
    masked, cut = masked[0, 0].numpy(), cut[0, 0].numpy()
    holes = cut & body_mask(original)
    mean_fill = np.where(cut, original[body_mask(original)].mean(), original)
    flat, noise = hole_metrics(original, mean_fill, holes, 2000), hole_metrics(original, masked, holes, 2000)
    interpolated = hole_metrics(original, interpolate_holes(masked, cut, 3.2), holes, 2000)
    assert flat["r"] is None and abs(noise["r"]) < 0.1 and interpolated["r"] > 0.3
    assert interpolated["l1"] < flat["l1"] < noise["l1"] and holes.sum() == interpolated["voxels"] > 1000


def test_full_swinunetr_decoder_pretrains_resumes_and_hands_encoder_and_decoder_to_finetuning(tmp_path):
    """--decoder swinunetr --inpaint-loss masked: stop after a step, resume, and the run's SwinUNETR-keyed file loads
    through fine-tuning's route with the decoder (31 of 31 tensors) equal to the pretrained one (the fine-tuning
    itself is ``finetune --init RUN``, whose load report names these counts)."""
    from safetensors.torch import load_file

    from swinssl.network import build_swin_unetr
    from swinssl.weights import choose_patch_merging, load_weights, read_weights, weights_file_of

    data = phantom_folder(tmp_path / "data")
    config = dict(roi=64, batch_size=1, steps=2, decoder="swinunetr", inpaint_loss="masked")
    assert run_pretraining(tiny_config(data, tmp_path / "run", stop_at=1, **config)) == EXIT_STOPPED
    assert run_pretraining(tiny_config(data, tmp_path / "run", **config), resume=True) == EXIT_OK
    log = read_events(tmp_path / "run" / "events.jsonl")
    assert [e["start_step"] for e in log if e["event"] == "start"] == [0, 1]
    handed = tmp_path / "run" / "swinunetr.safetensors"
    assert weights_file_of(tmp_path / "run") == handed and log[-1]["outputs"]["swinunetr"] == str(handed)
    pretrained = load_file(str(handed))
    assert {key.split(".")[0] for key in pretrained} == {"swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10",
                                                         "decoder5", "decoder4", "decoder3", "decoder2", "decoder1"}
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["model"]
    assert all(torch.equal(value, checkpoint[key]) for key, value in pretrained.items() if not key.startswith("swinViT."))

    # fine-tuning's route (swinssl.finetune.train): the run folder's weights file, its order, a 3-class SwinUNETR
    source = read_weights(weights_file_of(tmp_path / "run"))
    merging = choose_patch_merging(source)
    network = build_swin_unetr(1, 3, 12, merging[0] == "legacy")
    report = load_weights(network, source, merging)
    assert merging[0] == "v1.5" and "decoder 31/31" in report.summary() and report.encoder_matched == report.encoder_total
    assert all(torch.equal(network.state_dict()[key], value) for key, value in pretrained.items())


def test_must_show_cli_run_on_real_ct_and_mr_with_a_corrupt_file(tmp_path, shared_data):
    """The issue's acceptance command (real CT + MR + a corrupt file at ROI 64, then resume), at 6 steps instead of 20 to
    keep CI short: every check (per-step progress, two previews, two checkpoints, resume) still has two of each."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("ct/abdomen_ct_small_3mm.nii.gz", "mr/abdomen_mr_small_3mm.nii.gz"):
        os.symlink(shared_data / name, data / Path(name).name)
    (data / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")
    run = tmp_path / "RUN"
    events = run / "events.jsonl"
    common = ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = run_cli("pretrain", "--data", str(data), "--out", str(run), "--steps", "6", "--roi", "64", "--feature-size", "12",
                     "--batch-size", "1", "--events", str(events), "--preview-every", "3", "--checkpoint-every", "3", *common)
    assert result.returncode == 0, result.stderr
    log = read_events(events)
    warnings = [e for e in log if e["event"] == "warning" and e.get("file")]
    assert [w["file"] for w in warnings] == [str(data / "corrupt.nii.gz")] and "unreadable" in warnings[0]["reason"]
    start = [e for e in log if e["event"] == "start"]
    assert len(start) == 1 and start[0]["volumes"] == 2 and start[0]["skipped"] == 1 and start[0]["device"] == "cpu"
    assert [e["step"] for e in log if e["event"] == "progress"] == list(range(1, 7))
    assert all(np.isfinite(e["losses"]["total"]) and e["eta_s"] >= 0 for e in log if e["event"] == "progress")
    previews = [e for e in log if e["event"] == "preview"]
    assert [p["step"] for p in previews] == [3, 6]
    assert all(Path(p).exists() for e in previews for p in e["paths"].values())
    assert {e["step"] for e in log if e["event"] == "checkpoint"} == {3, 6}
    done = log[-1]
    assert done["event"] == "done" and all(Path(p).exists() for p in done["outputs"].values() if p)

    result = run_cli("pretrain", "--out", str(run), "--resume", "--steps", "7", "--events", str(events), *common)
    assert result.returncode == 0, result.stderr
    restarted = [e for e in read_events(events) if e["event"] == "start"][-1]
    assert restarted["start_step"] == 6 and restarted["resumed"]
    assert load_checkpoint(run / CHECKPOINT_NAME)["step"] == 7
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["steps"] == 7

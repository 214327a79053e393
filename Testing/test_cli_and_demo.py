"""The CLI's help and exit statuses, and the demo on the bundled real CT."""

from pathlib import Path

import SimpleITK as sitk

from conftest import run_cli
from swinssl.demo import demo_volume
from swinssl.events import read_events

DEMO_ORGANS = ["liver", "spleen", "stomach", "right kidney", "left kidney", "aorta"]
DEMO_RECONSTRUCTION_CORRELATION = 0.5  # Pearson r inside the body, preview crop vs its reconstruction (random weights: about 0.03)


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0 and "pretrain" in result.stdout and "demo" in result.stdout
    assert "--preview-every" in run_cli("pretrain", "--help").stdout


def test_bad_roi_is_a_clear_error(tmp_path):
    result = run_cli("pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--roi", "48")
    assert result.returncode == 1 and "divisible by 32" in result.stderr


def test_bundled_demo_ct_is_real_and_attributed():
    image = sitk.ReadImage(str(demo_volume()))
    assert image.GetSize() == (122, 101, 30) and image.GetSpacing() == (3.0, 3.0, 3.0)
    assert "TotalSegmentator" in (demo_volume().parent / "ATTRIBUTION.md").read_text()


def test_demo_runs_both_journeys_from_the_carried_models(tmp_path):
    """Pretraining continues from the carried model (its reconstruction follows the CT: correlation with
    the original crop), and the carried organ model writes a named .seg.nrrd and an overlay PNG."""
    import numpy as np
    import slicerio

    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "Pretraining finished: step 2 of 2" in result.stdout and "first quarter" in result.stdout and "torchrun" in result.stdout
    log = read_events(out / "events.jsonl")
    start = next(e for e in log if e["event"] == "start")
    assert start["init"]["matched"] == start["init"]["total"]  # every tensor of the model came from the carried file
    previews = [e for e in log if e["event"] == "preview"]
    assert previews and Path(previews[-1]["paths"]["png"]).exists()
    original = sitk.GetArrayFromImage(sitk.ReadImage(previews[-1]["paths"]["original"]))
    reconstruction = sitk.GetArrayFromImage(sitk.ReadImage(previews[-1]["paths"]["reconstruction"]))
    body = original > 0.3  # above -400 HU: leaves out air and padding, whose contrast alone would correlate
    assert np.corrcoef(original[body], reconstruction[body])[0, 1] > DEMO_RECONSTRUCTION_CORRELATION
    segmentation = slicerio.read_segmentation(str(out / "demo_ct.seg.nrrd"))
    assert [s["name"] for s in segmentation["segments"]] == DEMO_ORGANS
    assert (out / "segmentation.png").stat().st_size > 10_000
    assert "Segmented the demo CT" in result.stdout and all(f"{organ} " in result.stdout for organ in DEMO_ORGANS)
    again = run_cli("demo", "--out", str(out), "--steps", "2")
    assert again.returncode == 1 and "already holds a run" in again.stderr


def test_the_carried_models_say_what_they_were_trained_on():
    import json

    attribution = (demo_volume().parent / "ATTRIBUTION.md").read_text()
    for name in ("demo_ssl.safetensors", "demo_organs", "pseudo-labels"):
        assert name in attribution
    package = json.loads((demo_volume().parent / "demo_organs" / "model.json").read_text())
    assert [label["name"] for label in package["labels"]] == DEMO_ORGANS and package["training"]["steps"] > 0

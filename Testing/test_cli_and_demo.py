"""The CLI's help and exit statuses, and the demo on the bundled real CT."""

from pathlib import Path

import SimpleITK as sitk

from conftest import run_cli
from swinssl.demo import demo_volume
from swinssl.events import read_events


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


def test_demo_runs_and_summarises(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "SwinSSL demo finished" in result.stdout and "torchrun" in result.stdout and "first quarter" in result.stdout
    log = read_events(out / "events.jsonl")
    assert [e["step"] for e in log if e["event"] == "progress"] == [1, 2]
    previews = [e for e in log if e["event"] == "preview"]
    assert previews and Path(previews[-1]["paths"]["png"]).exists()
    assert (out / "checkpoint.pt").exists() and (out / "encoder.safetensors").exists() and (out / "loss_curves.png").exists()
    again = run_cli("demo", "--out", str(out), "--steps", "2")
    assert again.returncode == 1 and "already holds a run" in again.stderr

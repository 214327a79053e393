"""A command line that never loses work and never leaves the user guessing: every bad input of issues 11 and 22
gives a short message naming the file and the problem, a non-zero exit and no traceback, and nothing the
user had is overwritten or torn. Real files, real subprocesses."""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, TINY_MODEL, phantom_ct, run_cli, write_volume
from swinssl.events import read_events
from test_segmentation import make_package

TINY_PRETRAIN = [*TINY_MODEL, "--projection-dim", "16", "--batch-size", "2"]


def assert_user_error(result: subprocess.CompletedProcess, *named: str, code: int = 1) -> None:
    """Exit ``code``, a message of at most two lines (plus an optional hint) naming each of ``named``, no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "inline_container" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors, result.stderr
    message = result.stderr[result.stderr.index(errors[0]):]
    assert len(message.strip().splitlines()) <= 3 and len(message) < 700, message
    for text in named:
        assert str(text) in message, (text, message)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def truncated_copy(source: Path, target: Path, share: float = 0.3) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * share)])
    return target


@pytest.fixture
def phantom(tmp_path) -> Path:
    return write_volume(tmp_path / "data" / "ct.nii.gz", phantom_ct(), spacing=(2.0, 2.0, 2.5))


# --- work never lost -------------------------------------------------------------------------------
def test_a_run_in_an_existing_out_needs_resume_or_overwrite_and_leaves_every_file_as_it_was(tmp_path, phantom):
    out = tmp_path / "run"
    first = run_cli("pretrain", "--data", str(phantom), "--out", str(out), "--steps", "2", "--cache-dir", str(tmp_path / "cache"), *TINY_PRETRAIN)
    assert first.returncode == 0, first.stderr
    before = snapshot(out)
    again = run_cli("pretrain", "--data", str(phantom), "--out", str(out), "--steps", "3", "--cache-dir", str(tmp_path / "cache"), *TINY_PRETRAIN)
    assert_user_error(again, out, "--resume", "--overwrite")
    assert snapshot(out) == before

    model = make_package(tmp_path / "model")
    before = snapshot(model.path)
    finetune = run_cli("finetune", "--data", str(tmp_path / "data"), "--out", str(model.path), "--steps", "1")
    assert_user_error(finetune, model.path, "--resume", "--overwrite")
    assert snapshot(model.path) == before


def test_overwrite_keeps_the_old_run_until_the_new_checkpoint_and_clears_stale_temp_files(tmp_path, phantom):
    out = tmp_path / "run"
    arguments = ["pretrain", "--data", str(phantom), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *TINY_PRETRAIN]
    assert run_cli(*arguments, "--steps", "2").returncode == 0
    old_checkpoint = (out / "checkpoint.pt").read_bytes()
    (out / ".swinssl-tmp-abc123.checkpoint.pt").write_bytes(b"torn")  # what a SIGKILL during a write leaves
    process = subprocess.Popen([sys.executable, "-m", "swinssl", *arguments, "--steps", "400", "--checkpoint-every", "400", "--overwrite",
                                "--events", str(tmp_path / "events.jsonl")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "events.jsonl").exists() or not any(e["event"] == "progress" for e in read_events(tmp_path / "events.jsonl")):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() is not None else "timeout"
        time.sleep(0.2)
    assert (out / ".previous-run" / "checkpoint.pt").read_bytes() == old_checkpoint  # kept while no new checkpoint exists
    assert not (out / "checkpoint.pt").exists() and not list(out.glob(".swinssl-tmp-*"))
    process.send_signal(signal.SIGKILL)  # dies before its first checkpoint
    process.wait()
    assert (out / ".previous-run" / "checkpoint.pt").read_bytes() == old_checkpoint
    finished = run_cli(*arguments, "--steps", "2", "--overwrite", "--seed", "1")  # another seed: other weights
    assert finished.returncode == 0, finished.stderr
    assert not (out / ".previous-run").exists() and (out / "checkpoint.pt").read_bytes() != old_checkpoint
    umask = os.umask(0)
    os.umask(umask)
    assert oct((out / "checkpoint.pt").stat().st_mode & 0o777) == oct(0o666 & ~umask)  # not mkstemp's 0600


def _limited_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_never_tears_an_existing_segmentation(tmp_path, shared_data):
    """As on a full disk (RLIMIT_FSIZE: any write past 4 KB fails): the previous .seg.nrrd stays whole."""
    package = make_package(tmp_path / "model", spacing=(6.0, 6.0, 6.0))
    ct = shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"
    output = tmp_path / "out" / "ct.seg.nrrd"
    assert run_cli("segment", "--model", str(package.path), "--input", str(ct), "--output", str(output), "--device", "cpu").returncode == 0
    before = output.read_bytes()
    result = subprocess.run([sys.executable, "-m", "swinssl", "segment", "--model", str(package.path), "--input", str(ct), "--output",
                             str(output), "--device", "cpu", "--overwrite"], capture_output=True, text=True, timeout=300,
                            preexec_fn=_limited_file_size(4096))
    assert_user_error(result, output)
    assert "already exists" not in result.stderr  # refused by the full disk, not before the work
    assert output.read_bytes() == before and not list(output.parent.glob(".swinssl-tmp-*"))


def test_a_checkpoint_that_cannot_be_written_names_its_file_and_keeps_the_previous_one(tmp_path):
    program = ("import torch, sys; from pathlib import Path; from swinssl.training.checkpoint import atomic_torch_save\n"
               "path = Path(sys.argv[1]); atomic_torch_save({'w': torch.zeros(4)}, path)\n"
               "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))\n"
               "try:\n    atomic_torch_save({'w': torch.zeros(100000)}, path)\nexcept OSError as error:\n    print(error)\n")
    path = tmp_path / "checkpoint.pt"
    result = subprocess.run([sys.executable, "-c", program, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and f"could not write {path}" in result.stdout and "previous checkpoint is kept" in result.stdout
    assert "inline_container" not in result.stdout
    import torch

    assert torch.load(path, weights_only=True)["w"].shape == (4,)


# --- bad data refused everywhere ----------------------------------------------------------------------
def test_truncated_nifti_is_refused_by_segment_and_skipped_by_pretrain_with_a_warning_on_screen(tmp_path, phantom):
    truncated = truncated_copy(phantom, tmp_path / "data" / "cut.nii.gz")
    package = make_package(tmp_path / "model")
    result = run_cli("segment", "--model", str(package.path), "--input", str(truncated), "--output", str(tmp_path / "o.seg.nrrd"))
    assert_user_error(result, truncated, "truncated")
    pretrain = run_cli("pretrain", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--steps", "1",
                       "--cache-dir", str(tmp_path / "cache"), *TINY_PRETRAIN)
    assert pretrain.returncode == 0, pretrain.stderr
    assert f"warning: {truncated}: unreadable: truncated or corrupt compressed file" in pretrain.stderr
    assert "1 warning (listed above)" in pretrain.stderr


@pytest.mark.parametrize("values, reason", [(np.nan, "NaN"), (7.0, "every voxel is 7")])
def test_segment_refuses_nan_and_constant_volumes(tmp_path, values, reason):
    volume = write_volume(tmp_path / "bad.nii.gz", np.full((20, 24, 24), values, np.float32), spacing=(3.0, 3.0, 3.0))
    package = make_package(tmp_path / "model")
    result = run_cli("segment", "--model", str(package.path), "--input", str(volume), "--output", str(tmp_path / "o.seg.nrrd"))
    assert_user_error(result, volume, reason)
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_evaluate_refuses_maps_of_different_scans(tmp_path):
    prediction = write_volume(tmp_path / "pred.nii.gz", np.ones((10, 10, 10), np.uint8))
    reference = write_volume(tmp_path / "ref.nii.gz", np.ones((10, 10, 10), np.uint8), origin=(500.0, 0.0, 0.0))
    assert_user_error(run_cli("evaluate", "--pred", str(prediction), "--ref", str(reference)), prediction, reference, "not segmentations of the same scan")


def test_unevenly_spaced_dicom_is_refused_without_itk_noise(tmp_path, shared_data):
    series = shutil.copytree(shared_data / "ct" / "abdomen_ct_dicom_series", tmp_path / "series")
    slices = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series))
    Path(slices[10]).unlink()  # a missing slice
    package = make_package(tmp_path / "model")
    result = run_cli("segment", "--model", str(package.path), "--input", str(series), "--output", str(tmp_path / "o.seg.nrrd"))
    assert_user_error(result, series, "unevenly spaced")
    assert "itkImageSeriesReader" not in result.stderr and "WARNING: In" not in result.stderr


def write_dicom_series(folder: Path, array_kji: np.ndarray, series_uid: str, z0: float) -> None:
    """A minimal CT series written by SimpleITK/GDCM (one file per slice, its own SeriesInstanceUID)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, plane in enumerate(array_kji):
        image = sitk.GetImageFromArray(plane[None].astype(np.int16))
        image.SetSpacing((1.0, 1.0, 2.0))
        image.SetOrigin((0.0, 0.0, z0 + 2.0 * k))
        for tag, value in (("0008|0060", "CT"), ("0020|000e", series_uid), ("0020|000d", "1.2.3.4"), ("0020|0013", str(k + 1)),
                           ("0020|0032", f"0\\0\\{z0 + 2.0 * k}"), ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", "2")):
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid[-1]}_{k:03d}.dcm"))
        writer.Execute(image)


def test_a_folder_with_two_dicom_series_is_said_in_pretraining(tmp_path):
    volume = phantom_ct((12, 40, 40))
    write_dicom_series(tmp_path / "dicom", volume, "1.2.3.4.5.1", 0.0)
    write_dicom_series(tmp_path / "dicom", volume, "1.2.3.4.5.2", 100.0)
    result = run_cli("pretrain", "--data", str(tmp_path / "dicom"), "--out", str(tmp_path / "run"), "--steps", "1",
                     "--cache-dir", str(tmp_path / "cache"), *TINY_PRETRAIN)
    assert result.returncode == 0, result.stderr
    assert f"warning: {tmp_path / 'dicom'}: holds 2 DICOM series; each is used as a separate volume" in result.stderr


def test_mr_without_a_preset_and_unnamed_labels_are_said(tmp_path, shared_data):
    """Fine-tuning MR with the default CT window, and a label map with no table beside it."""
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(shared_data / "mr" / "abdomen_mr_small_3mm.nii.gz", cases / "mr.nii.gz")
    shutil.copy(shared_data / "mr" / "abdomen_mr_small_3mm_labels.nii.gz", cases / "mr_labels.nii.gz")
    result = run_cli("finetune", "--data", str(cases), "--out", str(tmp_path / "model"), "--steps", "1", "--roi", "64",
                     "--feature-size", "12", "--spacing", "6", "6", "6", "--val-every", "1", "--device", "cpu", timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"warning: {cases / 'mr.nii.gz'}: its lowest value is" in result.stderr and "--preset mr" in result.stderr
    assert f"warning: {cases / 'mr_labels.nii.gz'}: no label table names its values" in result.stderr
    assert "Fine-tuning finished" in result.stdout and "best validation mean Dice" in result.stdout


# --- messages that help -------------------------------------------------------------------------------
def test_argument_errors_fail_in_a_second_before_torch_is_imported(tmp_path):
    cases = [
        (["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--steps", "0"], "--steps: must be at least 1, got 0"),
        (["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--steps", "-3"], "--steps: must be at least 1, got -3"),
        (["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--spacing", "0", "0", "0"], "--spacing: must be a positive number, got 0"),
        (["segment", "--batch-size", "0", "--model", str(tmp_path), "--input", str(tmp_path), "--output", "o.seg.nrrd"], "--batch-size: must be at least 1"),
        (["pretrain", "--data", str(tmp_path / "typo"), "--out", str(tmp_path / "r")], f"{tmp_path / 'typo'}: no such file or folder"),
        (["segment", "--model", "no-such-model", "--input", str(tmp_path), "--output", "o.seg.nrrd"], "no-such-model: neither a model package folder"),
        (["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--roi", "33"], "--roi: must be divisible by 32"),
        (["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--feature-size", "20"], "--feature-size: must be a multiple of 12"),
        (["cache", "--data", str(tmp_path / "typo")], f"{tmp_path / 'typo'}: no such file or folder"),
    ]
    for arguments, message in cases:
        started = time.monotonic()
        result = run_cli(*arguments)
        assert_user_error(result, message, code=2)
        assert time.monotonic() - started < 10  # no torch import (which alone takes several seconds here)
    program = "import sys; from swinssl.cli import main; code = main(sys.argv[1:]); print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", program, "finetune", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--steps", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 2  # argparse exits before the print: nothing heavy was loaded on the way


def test_broken_weights_and_metadata_get_one_line_naming_the_file(tmp_path, shared_data):
    ct = shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"
    package = make_package(tmp_path / "model")
    weights = package.path / "model.safetensors"
    truncated_copy(weights, weights, share=0.5)
    result = run_cli("segment", "--model", str(package.path), "--input", str(ct), "--output", str(tmp_path / "o.seg.nrrd"))
    assert_user_error(result, weights, "not a readable safetensors file")
    init = run_cli("finetune", "--data", str(tmp_path), "--out", str(tmp_path / "ft"), "--init", str(weights))
    assert init.returncode == 1 and str(weights) in init.stderr and "Traceback" not in init.stderr

    other = make_package(tmp_path / "other", seed=1)
    import json

    meta = json.loads((other.path / "model.json").read_text(encoding="utf-8"))
    meta["feature_size"] = 24  # weights of a feature-12 network: a 7,000-character key list in torch's words
    (other.path / "model.json").write_text(json.dumps(meta))
    result = run_cli("segment", "--model", str(other.path), "--input", str(ct), "--output", str(tmp_path / "o.seg.nrrd"))
    assert_user_error(result, other.path / "model.safetensors", "do not fit the network")
    del meta["roi"]
    (other.path / "model.json").write_text(json.dumps(meta))
    result = run_cli("segment", "--model", str(other.path), "--input", str(ct), "--output", str(tmp_path / "o.seg.nrrd"))
    assert_user_error(result, other.path / "model.json", "missing roi")


def test_a_pickled_checkpoint_is_refused_without_suggesting_to_unpickle_it(tmp_path):
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "code": Path("x")}, path)  # a Python object beside the tensors
    result = run_cli("finetune", "--data", str(tmp_path), "--out", str(tmp_path / "ft"), "--init", str(path))
    assert result.returncode == 1 and str(path) in result.stderr and "pickled Python objects" in result.stderr
    assert "weights_only=False" not in result.stderr and "Traceback" not in result.stderr


def test_a_write_into_a_file_names_the_path(tmp_path, shared_data):
    blocker = tmp_path / "file"
    blocker.write_text("")
    package = make_package(tmp_path / "model", spacing=(6.0, 6.0, 6.0))
    result = run_cli("segment", "--model", str(package.path), "--input", str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"),
                     "--output", str(blocker / "o.seg.nrrd"), "--device", "cpu")
    assert_user_error(result, blocker / "o.seg.nrrd", "is a file, not a folder", code=2)  # refused before the inference


def test_a_bad_mrb_is_named_not_its_temporary_copy(tmp_path):
    import zipfile

    bundle = tmp_path / "scene.mrb"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("scene/scene.mrml", "<MRML><not closed")
    result = run_cli("finetune", "--scenes", str(bundle), "--out", str(tmp_path / "ft"), "--steps", "1")
    assert_user_error(result, bundle, "unreadable MRML")
    assert "swinssl-scenes-" not in result.stderr


# --- long work with feedback ----------------------------------------------------------------------------
def test_segment_reports_progress_with_eta_and_ends_with_volumes(tmp_path, shared_data):
    package = make_package(tmp_path / "model", spacing=(4.0, 4.0, 4.0))
    result = run_cli("segment", "--model", str(package.path), "--input", str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"),
                     "--output", str(tmp_path / "o.seg.nrrd"), "--device", "cpu", "--events", str(tmp_path / "events.jsonl"))
    assert result.returncode == 0, result.stderr
    progress = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "progress"]
    assert progress and "eta_s" in progress[-1] and progress[-1]["step"] == progress[-1]["total"]
    assert "Segmented with tiny-abdomen in" in result.stderr and " mL" in result.stderr


def test_pretraining_ends_with_a_per_task_summary(tmp_path, phantom):
    result = run_cli("pretrain", "--data", str(phantom), "--out", str(tmp_path / "run"), "--steps", "4", "--cache-dir", str(tmp_path / "cache"),
                     *TINY_PRETRAIN)
    assert result.returncode == 0, result.stderr
    assert "Pretraining finished: step 4 of 4" in result.stdout
    for name in ("total", "rotation", "contrast", "inpaint"):
        assert any(line.split()[:1] == [name] for line in result.stdout.splitlines()), name
    assert "first quarter" in result.stdout and "encoder" in result.stdout


# --- models --------------------------------------------------------------------------------------------
def test_models_by_name_with_a_header_readable_modes_and_refused_broken_packages(tmp_path, shared_data):
    models = tmp_path / "models"
    environment = dict(os.environ, SWINSSL_MODELS=str(models))
    empty = run_cli("models", "list", env=environment)
    assert empty.returncode == 0 and "No models installed" in empty.stdout and "swinssl models import" in empty.stdout
    source = make_package(tmp_path / "source")
    for name in ("liver-a", "liver-b"):
        assert run_cli("models", "import", str(source.path), "--name", name, env=environment).returncode == 0
    listing = run_cli("models", "list", env=environment).stdout.splitlines()
    assert listing[0].split()[:4] == ["NAME", "VERSION", "INPUTS", "SEGMENTS"]
    assert [line.split()[0] for line in listing[1:]] == ["liver-a", "liver-b", "demo-organs"]  # the bundled one last
    mode = (models / "liver-b" / "model.json").stat().st_mode & 0o777
    assert mode & 0o044 == 0o044  # group and others can read a shared models folder
    result = run_cli("segment", "--model", "liver-b", "--input", str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"),
                     "--output", str(tmp_path / "o.seg.nrrd"), "--device", "cpu", env=environment)
    assert result.returncode == 0, result.stderr
    broken = make_package(tmp_path / "broken", seed=2)
    truncated_copy(broken.path / "model.safetensors", broken.path / "model.safetensors", share=0.5)
    refused = run_cli("models", "import", str(broken.path), "--name", "broken", env=environment)
    assert_user_error(refused, broken.path / "model.safetensors")
    assert not (models / "broken").exists()


def test_third_party_deprecation_notices_are_not_shown_and_truncated_label_maps_are_refused(tmp_path):
    import warnings

    from swinssl.cli import quiet_third_party_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party_warnings()
        warnings.warn_explicit("argument x is deprecated", FutureWarning, "monai/networks/nets/swin_unetr.py", 1, module="monai.networks.nets.swin_unetr")
        warnings.warn_explicit("a warning of ours", UserWarning, "swinssl/x.py", 1, module="swinssl.x")
    assert [str(w.message) for w in caught] == ["a warning of ours"]
    reference = write_volume(tmp_path / "ref.nii.gz", np.ones((10, 10, 10), np.uint8))
    cut = truncated_copy(reference, tmp_path / "cut.nii.gz", share=0.6)
    assert_user_error(run_cli("evaluate", "--pred", str(cut), "--ref", str(reference)), cut, "truncated")


# --- issue 22: the command line tells the truth ---------------------------------------------------------
def fast_cli(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A command that must be refused while its command line is read or just after, before torch is imported
    (which alone takes several seconds here)."""
    started = time.monotonic()
    result = run_cli(*arguments, env=env)
    assert time.monotonic() - started < 10, f"{arguments} took {time.monotonic() - started:.1f} s"
    return result


def real_segmentation(tmp_path: Path, shared_data: Path) -> Path:
    """A real segmentation result as Slicer writes it: liver and spleen of the TotalSegmentator labels of a real CT."""
    from swinssl.labels.segmentation_file import write_label_map
    from swinssl.labels.table import LabelTable

    labels = sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_small_3mm_labels.nii.gz"))
    names = {name: int(value) for value, name in json.loads((shared_data / "ct" / "totalsegmentator_label_names.json").read_text(encoding="utf-8")).items()}
    array = sitk.GetArrayFromImage(labels)
    organs = sitk.GetImageFromArray(np.where(array == names["liver"], 1, np.where(array == names["spleen"], 2, 0)).astype(np.uint8))
    organs.CopyInformation(labels)
    return write_label_map(organs, LabelTable.from_names(["liver", "spleen"]), tmp_path / "result.seg.nrrd")[0]


def test_segment_refuses_an_atlas_and_a_segmentation_as_input_from_their_header(tmp_path, shared_data):
    atlas = Path(shutil.copy(shared_data / "mr" / "brain_t1_colin27_aal_labels.nii.gz", tmp_path / "aal.nii.gz"))
    output = tmp_path / "out.seg.nrrd"
    for volume, reason in ((atlas, "a label map (its NIfTI header says so), not an image"),
                           (real_segmentation(tmp_path, shared_data), "a segmentation (its header lists segments), not an image")):
        assert_user_error(fast_cli("segment", "--model", "demo-organs", "--input", str(volume), "--output", str(output)), volume, reason)
        assert not output.exists()


def test_finetune_refuses_an_atlas_given_as_the_image_of_a_case(tmp_path, shared_data):
    cases = tmp_path / "cases"
    cases.mkdir()
    atlas = Path(shutil.copy(shared_data / "mr" / "brain_t1_colin27_aal_labels.nii.gz", cases / "atlas.nii.gz"))
    shutil.copy(atlas, cases / "atlas_labels.nii.gz")
    result = run_cli("finetune", "--data", str(cases), "--out", str(tmp_path / "model"), "--steps", "1", "--roi", "64", "--feature-size", "12",
                     "--device", "cpu")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"warning: {atlas}: a label map (its NIfTI header says so), not an image" in result.stderr
    assert not (tmp_path / "model" / "model.json").exists()


def test_the_label_map_rule_refuses_real_label_maps_and_accepts_real_uint8_mr(tmp_path, shared_data):
    """Distinct values alone cannot tell them apart (the brain-only Colin27 T1 has 127 values, the AAL atlas 117):
    flat regions do. The AAL atlas is saved again without its NIfTI 'label' intent, so its values decide."""
    from swinssl.io.discovery import VolumeSource
    from swinssl.io.reader import VolumeError, read_volume

    for image in (shared_data / "mr" / "brain_t1_colin27.nii.gz", shared_data / "mr" / "brain_t1_colin27_brainonly.nii.gz",
                  shared_data / "mr" / "abdomen_mr_small_3mm.nii.gz", shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"):
        read_volume(VolumeSource(image), 1)
    atlas = sitk.ReadImage(str(shared_data / "mr" / "brain_t1_colin27_aal_labels.nii.gz"))
    plain = sitk.GetImageFromArray(sitk.GetArrayFromImage(atlas))
    plain.CopyInformation(atlas)
    sitk.WriteImage(plain, str(tmp_path / "aal_plain.nii.gz"))
    for labels, count in ((tmp_path / "aal_plain.nii.gz", 117), (shared_data / "ct" / "abdomen_ct_3mm_labels.nii.gz", 62),
                          (shared_data / "ct" / "abdomen_ct_dicom_series_labels.nii.gz", 32),
                          (shared_data / "mr" / "abdomen_mr_small_3mm_labels.nii.gz", 24)):
        with pytest.raises(VolumeError, match=f"a label map \\({count} integer values in flat regions"):
            read_volume(VolumeSource(labels), 1)


def _wait_for(condition, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_pretraining_skips_label_maps_says_the_time_per_step_and_warns_on_mr_read_as_ct(tmp_path, shared_data):
    """Default sizes on the CPU: the start says how long a step takes and how to make it short; stopped before the first step."""
    data = tmp_path / "data"
    data.mkdir()
    mr = Path(shutil.copy(shared_data / "mr" / "abdomen_mr_small_3mm.nii.gz", data / "mr.nii.gz"))
    atlas = Path(shutil.copy(shared_data / "mr" / "brain_t1_colin27_aal_labels.nii.gz", data / "aal.nii.gz"))
    organs = Path(shutil.copy(shared_data / "ct" / "abdomen_ct_small_3mm_labels.nii.gz", data / "organs.nii.gz"))  # no naming rule catches
    events = tmp_path / "events.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "swinssl", "pretrain", "--data", str(data), "--out", str(tmp_path / "run"),
                                "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--events", str(events)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:  # the volumes' warnings come before the model is built and the first (minutes-long) step
        _wait_for(lambda: events.exists() and any("nothing below" in e.get("reason", "") for e in read_events(events)), process, 240)
    finally:
        process.kill()
        stderr = process.communicate()[1]
    assert f"warning: {atlas}: a label map (its NIfTI header says so), not an image" in stderr
    assert f"warning: {organs}: a label map (42 integer values in flat regions" in stderr
    assert f"warning: nothing below -500 HU in 1 of 1 volume(s) read as CT ({mr})" in stderr and "--preset mr" in stderr
    assert "a step at feature size 48, ROI 96, batch 2 takes about" in stderr and "1000 steps about" in stderr
    assert "for a first run on a CPU use --roi 64 --feature-size 12 --batch-size 2" in stderr
    assert stderr.index("a step at feature size 48") < stderr.index(f"warning: {atlas}")  # said before the volumes are prepared


def test_the_bundled_demo_model_is_listed_segments_by_name_replaces_only_with_overwrite_and_logs_progress(tmp_path):
    environment = dict(os.environ, SWINSSL_MODELS=str(tmp_path / "models"), SWINSSL_PROGRESS_EVERY="0.001")
    listing = run_cli("models", "list", env=environment).stdout.splitlines()
    assert any(line.split()[0] == "demo-organs" and "demo: one CT" in line for line in listing[1:]), listing
    output = tmp_path / "patient.seg.nrrd"
    output.write_bytes(b"another patient's result")
    arguments = ["segment", "--model", "demo-organs", "--input", str(REPO / "swinssl" / "resources" / "demo_ct.nii.gz"), "--output",
                 str(output), "--device", "cpu", "--backend", "torch"]  # no OpenVINO conversion to wait for
    refused = fast_cli(*arguments, env=environment)
    assert_user_error(refused, output, "already exists", "--overwrite")
    assert output.read_bytes() == b"another patient's result"
    result = run_cli(*arguments, "--overwrite", env=environment)  # stderr is a pipe here, as in a log file: progress lines
    assert result.returncode == 0, result.stderr
    assert "Segmented with demo-organs" in result.stderr
    liver = next(line for line in result.stderr.splitlines() if line.split()[:1] == ["liver"])
    assert 500 < float(liver.split()[1]) < 3000, liver  # mL: an adult liver, not 0.0
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d inference: \d+ of \d+ \(\d+ %\).*", line) for line in result.stderr.splitlines()), result.stderr
    assert output.read_bytes()[:4] == b"NRRD"


def test_a_second_run_into_a_folder_in_use_is_refused_with_the_owner_pid(tmp_path, phantom):
    from swinssl.training.run_folder import LOCK_FILE, RunFolderLock, lock_owner

    out = tmp_path / "run"
    arguments = ["pretrain", "--data", str(phantom), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *TINY_PRETRAIN]
    first = subprocess.Popen([sys.executable, "-m", "swinssl", *arguments, "--steps", "1000"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (out / LOCK_FILE).exists(), first, 60)
        for extra in ([], ["--overwrite"], ["--resume"]):
            assert_user_error(fast_cli(*arguments, "--steps", "2", *extra), out, f"in use by swinssl pretrain (pid {first.pid}")
        finetune = fast_cli("finetune", "--data", str(tmp_path / "data"), "--out", str(out), "--steps", "1")
        assert_user_error(finetune, out, f"pid {first.pid}")
        assert lock_owner(out)["pid"] == first.pid
    finally:
        first.kill()
        first.wait()
    assert lock_owner(out) is None  # killed: the lock it left is stale, and the next run takes the folder
    with RunFolderLock(out, "test"):
        assert lock_owner(out)["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists()


def test_outputs_are_checked_and_abbreviations_refused_when_the_command_line_is_read(tmp_path, phantom):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (["pretrain", "--data", str(phantom), "--out", str(blocker)], f"{blocker}: is a file; --out is a folder"),
        (["finetune", "--data", str(tmp_path), "--out", str(blocker)], f"{blocker}: is a file; --out is a folder"),
        (["segment", "--model", "demo-organs", "--input", str(phantom), "--output", str(tmp_path)], "the output must end in"),
        (["evaluate", "--pred", str(phantom), "--ref", str(phantom), "--json", str(tmp_path)], f"{tmp_path}: is a folder"),
        (["pretrain", "--data", str(phantom), "--out", str(tmp_path / "run"), "--step", "5"], "unrecognized arguments: --step 5"),
        (["segment", "--model", "demo-organs", "--input", str(phantom), "--output", str(tmp_path / "o.seg.nrrd"), "--over"],
         "unrecognized arguments: --over"),
    ]
    for arguments, message in cases:
        assert_user_error(fast_cli(*arguments), message, code=2)
    assert not (tmp_path / "run").exists() and blocker.read_text(encoding="utf-8") == ""


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this user cannot write into: mode 0555, or for root (who ignores modes) the immutable attribute."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0 if shutil.which("chattr") else False
        if not immutable or os.access(folder, os.W_OK):
            pytest.skip("no way to make a read-only folder for this user here (root without chattr)")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_a_read_only_output_folder_is_refused_before_the_work(tmp_path, phantom, read_only_folder):
    for arguments in (["segment", "--model", "demo-organs", "--input", str(phantom), "--output", str(read_only_folder / "o.seg.nrrd")],
                      ["segment", "--model", "demo-organs", "--input", str(phantom), "--output", str(tmp_path / "o.seg.nrrd"),
                       "--overlay", str(read_only_folder / "sub" / "o.png")],
                      ["pretrain", "--data", str(phantom), "--out", str(read_only_folder / "run")],
                      ["pretrain", "--data", str(phantom), "--out", str(read_only_folder)]):
        assert_user_error(fast_cli(*arguments), read_only_folder, "read-only", code=2)
    assert list(read_only_folder.iterdir()) == [] and not (tmp_path / "o.seg.nrrd").exists()


def test_an_impossible_voxel_spacing_is_refused_before_resampling(tmp_path):
    """1000 mm voxels (metres written as millimetres): resampling onto the model grid asked ITK for terabytes."""
    volume = write_volume(tmp_path / "metres.nii.gz", phantom_ct((30, 40, 40)), spacing=(1000.0, 1000.0, 2500.0))
    result = fast_cli("segment", "--model", "demo-organs", "--input", str(volume), "--output", str(tmp_path / "o.seg.nrrd"))
    assert_user_error(result, volume, "4e+04 x 4e+04 x 7.5e+04 mm across", "the spacing in its header is wrong")
    assert "Failed to allocate" not in result.stderr and not (tmp_path / "o.seg.nrrd").exists()


def test_evaluate_reads_a_csv_names_table_as_atlases_ship_it(tmp_path, shared_data):
    """The reference labels carry no names; their table comes as value,name lines (from the TotalSegmentator names)."""
    names = json.loads((shared_data / "ct" / "totalsegmentator_label_names.json").read_text(encoding="utf-8"))
    table = tmp_path / "names.csv"
    table.write_text("value,name\n" + "".join(f"{value},{name}\n" for value, name in names.items()))
    result = run_cli("evaluate", "--pred", str(real_segmentation(tmp_path, shared_data)), "--ref",
                     str(shared_data / "ct" / "abdomen_ct_small_3mm_labels.nii.gz"), "--ref-names", str(table))
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("|")}
    assert "1.000" in rows["liver"] and "1.000" in rows["spleen"], result.stdout


def test_names_tables_in_json_csv_and_atlas_text_or_a_message_that_says_what_is_needed(tmp_path, shared_data):
    from swinssl.labels.table import read_names_file

    aal = read_names_file(shared_data / "mr" / "aal_label_names.txt")  # "1 Precentral_L 2001": value, name, code
    assert len(aal) == 116 and aal[1] == "Precentral_L" and aal[116] == "Vermis_10"
    assert read_names_file(shared_data / "ct" / "totalsegmentator_label_names.json")[5] == "liver"
    (tmp_path / "slicer.ctbl").write_text("# Slicer colour table\n0 Background 0 0 0 0\n1 tumour 255 0 0 255\n")
    assert read_names_file(tmp_path / "slicer.ctbl") == {1: "tumour"}
    (tmp_path / "bad.csv").write_text("organ;colour\nliver;red\n")
    with pytest.raises(ValueError, match="bad.csv: no 'value,name' line found; a names table is CSV"):
        read_names_file(tmp_path / "bad.csv")
    (tmp_path / "broken.json").write_text('{"1": "liver",')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        read_names_file(tmp_path / "broken.json")

"""Sliding-window segmentation: agreement with MONAI, exact geometry, .seg.nrrd output, bounded memory."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import slicerio
import torch
from monai.inferers import sliding_window_inference

from conftest import run_cli, write_volume
from swinssl.events import read_events
from swinssl.inference.segment import to_input_grid, to_model_grid
from swinssl.inference.sliding_window import sliding_window_labels
from swinssl.labels.anatomy import standard_name
from swinssl.labels.table import LabelTable
from swinssl.network import build_swin_unetr
from swinssl.overlay import write_overlay_png
from swinssl.package import InputChannel, ModelPackage, load_package

ORGANS = ["liver", "spleen", "kidney_right"]


def make_package(folder: Path, spacing=(3.0, 3.0, 3.0), roi=64, seed=0) -> ModelPackage:
    """A tiny SwinUNETR package (feature size 12) with random weights."""
    torch.manual_seed(seed)
    network = build_swin_unetr(1, len(ORGANS) + 1, 12)
    package = ModelPackage("tiny-abdomen", LabelTable.from_names(ORGANS), [InputChannel("CT", "ct")], spacing, roi, 12)
    package.save(folder, network.state_dict())
    return load_package(folder)


def real_ct_tensor(shared_data) -> torch.Tensor:
    image = sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"))
    array = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)[None]
    return torch.from_numpy(np.clip((array + 1000) / 2000, 0, 1))


@pytest.mark.parametrize("roi, overlap", [(64, 0.5), (96, 0.25)])
def test_labels_equal_monai_sliding_window_inference(tmp_path, shared_data, roi, overlap):
    """The whole fast path (fused attention, channels-last, float16 sums) against the plain MONAI network."""
    package = make_package(tmp_path / "model", roi=roi)
    network = package.build_network()
    plain = build_swin_unetr(1, package.labels.num_classes, 12, fused_attention=False).eval()
    plain.load_state_dict(network.state_dict())
    image = real_ct_tensor(shared_data)  # (1, 122, 101, 30): z smaller than the ROI -> padded as MONAI does
    with torch.no_grad():
        reference = sliding_window_inference(image[None], roi, 4, plain, overlap=overlap, mode="gaussian").argmax(1)[0]
    ours = sliding_window_labels(image, network, roi, package.labels.num_classes, overlap=overlap)
    assert ours.shape == reference.shape
    agreement = float((ours.long() == reference).float().mean())
    assert agreement >= 0.999, agreement
    assert len(torch.unique(reference)) > 1  # a comparison of two constant maps would prove nothing


def test_air_windows_are_skipped_and_stay_background(tmp_path):
    package = make_package(tmp_path / "model")
    image = torch.zeros(1, 192, 64, 64)
    image[:, :60] = 0.5  # body only in the first 60 slices along X
    calls = []
    labels = sliding_window_labels(image, package.build_network(), 64, 4, body_threshold=0.25, progress=lambda d, t, s: calls.append((d, t, s)))
    done, total, skipped = calls[-1]
    assert done == total and skipped > 0
    assert (labels[128:] == 0).all()


def physical(image: sitk.Image, index) -> np.ndarray:
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index]))


def test_geometry_round_trip_on_an_oblique_lps_anisotropic_volume(tmp_path):
    """A blob at a known RAS point goes to the model grid, is labelled there, and comes back at the same place."""
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    direction = rotation @ np.diag([1.0, -1.0, -1.0])  # oblique, flipped axes
    image = sitk.Image([60, 50, 24], sitk.sitkInt16)
    image.SetSpacing((0.9, 1.1, 4.0))
    image.SetOrigin((-20.0, 35.0, 60.0))
    image.SetDirection(tuple(direction.ravel()))
    image = sitk.Add(image, -1000)
    target_ras = np.array([-5.0, -12.0, 10.0])  # (R, A, S) mm
    target_lps = target_ras * np.array([-1, -1, 1])
    centre = np.asarray(image.TransformPhysicalPointToContinuousIndex(tuple(target_lps)))
    array = sitk.GetArrayFromImage(image)  # (K, J, I)
    k, j, i = np.indices(array.shape)
    spacing = np.array([0.9, 1.1, 4.0])
    distance = np.sqrt((((np.stack([i, j, k], -1) - centre) * spacing) ** 2).sum(-1))
    array[distance < 6.0] = 800
    blob = sitk.GetImageFromArray(array)
    blob.CopyInformation(image)

    package = ModelPackage("geo", LabelTable.from_names(["blob"]), [InputChannel("CT", "ct")], (2.0, 2.0, 2.0), 64, 12)
    normalized, geometry = to_model_grid([blob], package)
    labels = (normalized[0] > 0.8).astype(np.uint8)  # the "model": a threshold on the blob
    back = to_input_grid(labels, geometry, blob)
    assert back.GetSize() == blob.GetSize() and back.GetSpacing() == blob.GetSpacing()
    assert back.GetOrigin() == blob.GetOrigin() and back.GetDirection() == blob.GetDirection()
    found = np.argwhere(sitk.GetArrayFromImage(back) == 1)[:, ::-1].mean(axis=0)  # (i, j, k)
    found_ras = physical(back, found) * np.array([-1, -1, 1])
    assert np.linalg.norm(found_ras - target_ras) < 1.5  # within one model voxel (2 mm)


def test_segment_cli_on_the_real_dicom_series_writes_a_named_seg_nrrd_on_the_input_grid(tmp_path, shared_data):
    make_package(tmp_path / "model", spacing=(3.0, 3.0, 3.0))
    series = shared_data / "ct" / "abdomen_ct_dicom_series"
    output = tmp_path / "out" / "result.seg.nrrd"
    events = tmp_path / "events.jsonl"
    result = run_cli("segment", "--model", str(tmp_path / "model"), "--input", str(series), "--output", str(output),
                     "--device", "cpu", "--events", str(events), "--overlay", str(tmp_path / "out" / "overlay.png"),
                     "--dicom-seg", str(tmp_path / "out" / "result.dcm"))
    assert result.returncode == 0, result.stderr
    assert plt.imread(tmp_path / "out" / "overlay.png").shape[2] in (3, 4)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series)))
    source = reader.Execute()
    segmentation = slicerio.read_segmentation(str(output))
    assert [s["name"] for s in segmentation["segments"]] == ORGANS
    assert [s["labelValue"] for s in segmentation["segments"]] == [1, 2, 3]
    assert np.asarray(segmentation["voxels"]).shape == source.GetSize()  # (I, J, K) order in slicerio
    written = sitk.ReadImage(str(output))
    assert written.GetSize() == source.GetSize()
    assert np.allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-4)
    assert np.allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-3)
    assert np.allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    log = read_events(events)
    progress = [e for e in log if e["event"] == "progress"]
    assert progress and progress[-1]["step"] == progress[-1]["total"]
    assert log[-1]["event"] == "done" and log[-1]["outputs"]["overlay"] == str(tmp_path / "out" / "overlay.png")
    dicom_seg = pydicom.dcmread(log[-1]["outputs"]["dicom_seg"])  # the same labels as a DICOM Segmentation of the series
    labels = np.asarray(segmentation["voxels"])
    present = [s["name"] for s in segmentation["segments"] if (labels == s["labelValue"]).any()]
    assert present and [s.SegmentLabel for s in dicom_seg.SegmentSequence] == [standard_name(name) for name in present]  # "right kidney"
    assert int(dicom_seg.NumberOfFrames) == sum(int((labels == s["labelValue"]).any(axis=(0, 1)).sum()) for s in segmentation["segments"])


def test_overlay_png_is_refused_before_torch_loads_when_not_a_png(tmp_path, ct_phantom_file):
    make_package(tmp_path / "model")
    result = run_cli("segment", "--model", str(tmp_path / "model"), "--input", str(ct_phantom_file), "--output",
                     str(tmp_path / "o.seg.nrrd"), "--overlay", str(tmp_path / "o.jpg"))
    assert result.returncode == 2 and "o.jpg: the output must end in .png" in result.stderr and "Traceback" not in result.stderr


def test_overlay_draws_the_liver_on_screen_left_of_the_axial_view(tmp_path, shared_data):
    """Radiological convention, from the anatomy: the liver lies in the patient's right, so it must appear
    on the left of the axial panel; its colour is the table's."""
    ct = sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"))
    labels = sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_small_3mm_labels.nii.gz"))
    names = json.loads((shared_data / "ct" / "totalsegmentator_label_names.json").read_text(encoding="utf-8"))
    liver_value = int(next(value for value, name in names.items() if name == "liver"))
    liver = sitk.Cast(labels == liver_value, sitk.sitkUInt8)
    table = LabelTable.from_names(["liver"], colors={"liver": (0.0, 1.0, 0.0)})
    png = write_overlay_png(ct, liver, table, tmp_path / "liver.png", "liver")
    picture = plt.imread(png)[..., :3]
    green = (picture[..., 1] > picture[..., 0] + 0.15) & (picture[..., 1] > picture[..., 2] + 0.15)
    axial = green[:, : picture.shape[1] // 3]
    rows, columns = np.nonzero(axial)
    assert len(columns) > 200, "no liver-coloured pixels in the axial panel"
    panel = np.nonzero(picture[:, : picture.shape[1] // 3].mean(axis=2) < 0.9)[1]  # the axial image on the white figure
    assert columns.mean() < (panel.min() + panel.max()) / 2, "the liver must be on the screen's left (patient right)"


def test_nifti_output_has_a_json_label_table(tmp_path, shared_data):
    make_package(tmp_path / "model", spacing=(6.0, 6.0, 6.0))
    output = tmp_path / "seg.nii.gz"
    result = run_cli("segment", "--model", str(tmp_path / "model"), "--input", str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"),
                     "--output", str(output), "--device", "cpu", "--fast")
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "seg.json").read_text(encoding="utf-8"))
    assert [entry["name"] for entry in table["labels"]] == ORGANS
    assert sitk.ReadImage(str(output)).GetSize() == (122, 101, 30)


def test_bad_model_folder_and_wrong_channel_count_are_clear_errors(tmp_path, ct_phantom_file):
    result = run_cli("segment", "--model", str(tmp_path), "--input", str(ct_phantom_file), "--output", str(tmp_path / "o.seg.nrrd"))
    assert result.returncode == 2 and "neither a model package folder nor an installed model" in result.stderr  # before torch loads
    make_package(tmp_path / "model")
    result = run_cli("segment", "--model", str(tmp_path / "model"), "--input", str(ct_phantom_file), str(ct_phantom_file),
                     "--output", str(tmp_path / "o.seg.nrrd"))
    assert result.returncode == 1 and "takes 1 input(s) (CT); got 2" in result.stderr


MEMORY_PROBE = """
import sys
from pathlib import Path
from swinssl.events import EventLog
from swinssl.inference.segment import SegmentOptions, segment_files
from swinssl.package import load_package
def status_kib(field):  # VmHWM is this process's own peak; ru_maxrss would include the parent's from before exec
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1]) * 1024
package = load_package(sys.argv[1])
package.build_network()
baseline = status_kib("VmRSS:")
segment_files([Path(sys.argv[2])], Path(sys.argv[3]), package, SegmentOptions(device="cpu", batch_size=1), EventLog(None))
print(baseline, status_kib("VmHWM:"))
"""


def test_segmenting_a_512x512x400_volume_keeps_peak_memory_bounded(tmp_path):
    """Segmenting a 512x512x400 int16 CT-like volume (200 MB) at 0.8 mm with a 4-class model adds less
    than 1.0 GB to the process after imports (window batch 1). Float32 class maps at the input
    resolution alone would take 4 x 4 B x 105 M = 1.68 GB, before any resampling copy."""
    volume = np.full((400, 512, 512), -1000, np.int16)
    volume[40:360, 96:416, 96:416] = 40  # body
    path = write_volume(tmp_path / "big.nrrd", volume, spacing=(0.8, 0.8, 0.8))
    del volume
    make_package(tmp_path / "model", spacing=(4.0, 4.0, 4.0), roi=64)
    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "model"), str(path), str(tmp_path / "out.seg.nrrd")],
                           capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr
    baseline, peak = map(int, probe.stdout.split())
    assert peak - baseline < 1.0e9, f"peak {peak / 1e9:.2f} GB, {(peak - baseline) / 1e9:.2f} GB above the baseline"
    assert sitk.ReadImage(str(tmp_path / "out.seg.nrrd")).GetSize() == (512, 512, 400)


DEMO_MODEL = Path(__file__).parents[1] / "swinssl" / "resources" / "demo_organs"
DEMO_CT = Path(__file__).parents[1] / "swinssl" / "resources" / "demo_ct.nii.gz"  # the real abdominal CT bundled with it


@pytest.fixture(scope="module")
def demo_torch_fp32():
    """One PyTorch fp32 run of the carried demo organ model on the bundled real CT, shared by the tests below:
    (package, images, labels (K, J, I) uint8, confidence (K, J, I) float32)."""
    from swinssl.events import EventLog
    from swinssl.inference.segment import SegmentOptions, read_inputs, segment_image

    package = load_package(DEMO_MODEL)
    images = read_inputs([DEMO_CT], package)
    result = segment_image(images, package, SegmentOptions(device="cpu", backend="torch", confidence=True), EventLog())
    return package, images, sitk.GetArrayFromImage(result.labels), sitk.GetArrayFromImage(result.confidence)


def test_the_whole_pipeline_gives_monais_labels_on_the_real_ct(demo_torch_fp32):
    """segment_image against MONAI's pipeline on the same model grid (sliding_window_inference over the whole volume,
    plain SwinUNETR, arg-max, the same resampling back): windows are placed as MONAI places them, the foreground box
    only skips windows. Placing them over the box instead agreed on 99.715 % of voxels (98.2 % of organ voxels)."""
    from swinssl.inference.segment import to_input_grid, to_model_grid

    package, images, ours, _ = demo_torch_fp32
    plain = build_swin_unetr(1, package.labels.num_classes, package.feature_size, fused_attention=False).eval()
    plain.load_state_dict(package.build_network().state_dict())
    array, geometry = to_model_grid(images, package)
    with torch.no_grad():
        logits = sliding_window_inference(torch.from_numpy(array)[None], package.roi, 4, plain, overlap=0.5, mode="gaussian")
    reference = sitk.GetArrayFromImage(to_input_grid(logits.argmax(1)[0].to(torch.uint8).numpy(), geometry, images[0]))
    organs = (reference > 0) | (ours > 0)
    assert organs.sum() > 10000 and (ours == reference).mean() >= 0.9999 and (ours == reference)[organs].mean() >= 0.999


def test_bf16_on_the_cpu_is_opt_in_and_stays_close_to_fp32_with_the_trained_demo_model(demo_torch_fp32):
    """--precision auto is fp32 on the CPU; bf16 changes a few voxels of the trained demo model's organs on the real CT."""
    from swinssl.events import EventLog
    from swinssl.inference.segment import SegmentOptions, inference_dtype, segment_image

    assert inference_dtype(torch.device("cpu"), "auto") is None and inference_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    package, images, fp32, _ = demo_torch_fp32
    bf16 = sitk.GetArrayFromImage(segment_image(images, package, SegmentOptions(device="cpu", precision="bf16", backend="torch"), EventLog()).labels)
    organs = (fp32 > 0) | (bf16 > 0)
    assert (fp32 != bf16).any()  # the option reached the network
    assert (fp32 == bf16)[organs].mean() > 0.99 and (fp32 == bf16).mean() > 0.999


@pytest.fixture(scope="module")
def openvino_cache(tmp_path_factory):
    """An empty OpenVINO model cache for this module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWINSSL_OPENVINO_CACHE", str(tmp_path_factory.mktemp("openvino-cache")))
        yield


def test_openvino_fp32_agrees_with_pytorch_on_the_real_ct_and_the_second_run_does_not_convert(tmp_path, demo_torch_fp32,
                                                                                              openvino_cache, monkeypatch):
    """backend auto on the CPU is OpenVINO: fp32 labels >= 99.99 % equal to PyTorch's; confidence within 1e-3 at 99.9 % of
    voxels (measured 99.95 %, at most 2e-3; summing the logits in float32 instead of float16 still left 1.9e-3; against
    a float64 PyTorch run of one 64^3 window, PyTorch fp32 logits are within 7e-6 and OpenVINO's f32 within 7e-4, with
    instance normalisation alone 10x less exact: the few larger differences are OpenVINO's fp32 kernels, not our sums);
    then the cached model is loaded without converting."""
    import openvino

    from swinssl.events import EventLog
    from swinssl.inference.openvino_backend import PREPARE_MESSAGE, compiled_network
    from swinssl.inference.segment import SegmentOptions, segment_image

    package, images, labels, confidence = demo_torch_fp32
    first = segment_image(images, package, SegmentOptions(device="cpu", backend="auto", confidence=True), EventLog(tmp_path / "first.jsonl"))
    prepared = [e for e in read_events(tmp_path / "first.jsonl") if e.get("stage") == "prepare"]
    assert prepared[0]["message"] == PREPARE_MESSAGE
    assert prepared[-1] | {"time": 0} == prepared[-1] | {"time": 0, "backend": "openvino", "precision": "f32", "converted": True}
    ours, ours_confidence = sitk.GetArrayFromImage(first.labels), sitk.GetArrayFromImage(first.confidence)
    organs = labels > 0
    assert organs.sum() > 10000 and len(np.unique(labels)) >= 5  # liver, spleen, kidney, stomach, aorta: not an empty map
    assert (ours == labels).mean() >= 0.9999 and (ours == labels)[organs].mean() >= 0.999
    difference = np.abs(ours_confidence - confidence)
    assert (difference <= 1e-3).mean() >= 0.999 and difference.mean() < 1e-4 and difference.max() < 5e-3, difference.max()

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(openvino, "convert_model", no_conversion)
    events = EventLog(tmp_path / "second.jsonl")
    assert compiled_network(package, "fp32", events) is not None
    assert [e for e in read_events(tmp_path / "second.jsonl") if e["event"] != "progress"] == []  # no warning
    assert events.last["progress"]["converted"] is False


def test_a_failed_conversion_falls_back_to_pytorch_with_one_warning(tmp_path, demo_torch_fp32, monkeypatch):
    """OpenVINO's converter forced to fail: one warning naming the reason, and PyTorch segments the (cropped) real CT."""
    import openvino

    from swinssl.events import EventLog
    from swinssl.inference.segment import SegmentOptions, segment_image

    def broken(*args, **kwargs):
        raise RuntimeError("Exception from src/frontends/pytorch:\nforced conversion failure")

    monkeypatch.setattr(openvino, "convert_model", broken)
    monkeypatch.setenv("SWINSSL_OPENVINO_CACHE", str(tmp_path / "cache"))
    package, images, labels, _ = demo_torch_fp32
    crop = images[0][20:84, 20:84, :]  # one 64^3 window over the liver: a short PyTorch run
    result = segment_image([crop], package, SegmentOptions(device="cpu", backend="openvino"), EventLog(tmp_path / "events.jsonl"))
    warnings = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "warning"]
    assert len(warnings) == 1 and "forced conversion failure" in warnings[0]["reason"] and "PyTorch" in warnings[0]["reason"]
    assert "Traceback" not in warnings[0]["reason"]
    assert (sitk.GetArrayFromImage(result.labels) == 1).sum() > 1000  # the liver, segmented by PyTorch
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("model.xml"))


def test_an_openvino_runtime_failure_reruns_the_windows_on_pytorch_with_one_warning(tmp_path, demo_torch_fp32, openvino_cache,
                                                                                   monkeypatch):
    """The compiled network (cached by the test above) forced to fail on its first window: one warning, PyTorch's labels."""
    import openvino

    from swinssl.events import EventLog
    from swinssl.inference.segment import SegmentOptions, segment_image

    def broken(*args, **kwargs):
        raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp:224:\nforced runtime failure")

    monkeypatch.setattr(openvino.InferRequest, "infer", broken)
    package, images, _, _ = demo_torch_fp32
    crop = images[0][20:84, 20:84, :]  # one 64^3 window over the liver
    result = segment_image([crop], package, SegmentOptions(device="cpu", backend="openvino"), EventLog(tmp_path / "events.jsonl"))
    events = read_events(tmp_path / "events.jsonl")
    warnings = [e for e in events if e["event"] == "warning"]
    assert any(e.get("backend") == "openvino" for e in events)  # OpenVINO was prepared, then failed while running
    assert len(warnings) == 1 and "forced runtime failure" in warnings[0]["reason"] and "PyTorch" in warnings[0]["reason"]
    torch_labels = segment_image([crop], package, SegmentOptions(device="cpu", backend="torch"), EventLog()).labels
    assert np.array_equal(sitk.GetArrayFromImage(result.labels), sitk.GetArrayFromImage(torch_labels))
    assert (sitk.GetArrayFromImage(result.labels) == 1).sum() > 1000


def test_a_package_that_recommends_torch_runs_on_torch_under_auto_and_round_trips_its_choice(tmp_path, demo_torch_fp32, monkeypatch):
    """model.json's ``backend`` is used when the run asks for auto; an explicit backend wins; a bad value is refused."""
    import dataclasses

    from swinssl.events import EventLog
    from swinssl.inference import segment
    from swinssl.inference.segment import SegmentOptions, segment_image

    package, images, _, _ = demo_torch_fp32
    recommends_torch = dataclasses.replace(package, backend="torch")
    recommends_torch.save(tmp_path / "model", package.build_network().state_dict())
    assert load_package(tmp_path / "model").backend == "torch" and load_package(DEMO_MODEL).backend == "auto"

    def no_openvino(*args, **kwargs):
        raise AssertionError("OpenVINO was prepared")

    monkeypatch.setattr(segment, "compiled_network", no_openvino)
    crop = images[0][20:84, 20:84, :]  # one 64^3 window over the liver
    result = segment_image([crop], load_package(tmp_path / "model"), SegmentOptions(device="cpu", backend="auto"), EventLog())
    assert (sitk.GetArrayFromImage(result.labels) == 1).sum() > 1000
    with pytest.raises(AssertionError, match="OpenVINO was prepared"):
        segment_image([crop], load_package(tmp_path / "model"), SegmentOptions(device="cpu", backend="openvino"), EventLog())
    meta = json.loads((tmp_path / "model" / "model.json").read_text(encoding="utf-8"))
    (tmp_path / "model" / "model.json").write_text(json.dumps(meta | {"backend": "tensorrt"}))
    with pytest.raises(ValueError, match="tensorrt"):
        load_package(tmp_path / "model")


def test_the_openvino_cache_keeps_the_most_recently_used_models(tmp_path):
    import os

    from swinssl.inference.openvino_backend import CACHE_KEEP, prune_cache

    for age in range(CACHE_KEEP + 2):  # model 0 used last
        folder = tmp_path / f"model{age}" / "compiled-f32"
        folder.mkdir(parents=True)
        (folder.parent / "model.xml").write_text("<net/>")
        os.utime(folder.parent, (1e9 - age * 3600, 1e9 - age * 3600))
    (tmp_path / ".model9-partial").mkdir()  # a conversion being written by another run
    removed = prune_cache(tmp_path)
    assert sorted(f.name for f in removed) == [f"model{CACHE_KEEP}", f"model{CACHE_KEEP + 1}"]
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([".model9-partial"] + [f"model{age}" for age in range(CACHE_KEEP)])


def test_backend_openvino_without_openvino_is_a_one_line_usage_error(tmp_path, ct_phantom_file):
    hidden = "import sys; sys.modules['openvino'] = None; from swinssl.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", hidden, "segment", "--model", str(DEMO_MODEL), "--input", str(ct_phantom_file),
                             "--output", str(tmp_path / "out.seg.nrrd"), "--backend", "openvino"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith(("usage:", " ", "(see "))]
    assert len(errors) == 1 and "openvino is not installed" in errors[0] and "pip install openvino" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.seg.nrrd").exists()


def test_confidence_is_the_largest_softmax_probability_of_monais_mean_logits(tmp_path, shared_data):
    """Brute force: MONAI's Gaussian-weighted mean logits, softmax, max over classes, on the real CT."""
    from swinssl.inference.sliding_window import sliding_window_predict

    package = make_package(tmp_path / "model")
    network = package.build_network()
    plain = build_swin_unetr(1, package.labels.num_classes, 12, fused_attention=False).eval()
    plain.load_state_dict(network.state_dict())
    image = real_ct_tensor(shared_data)
    with torch.no_grad():
        mean_logits = sliding_window_inference(image[None], 64, 4, plain, overlap=0.5, mode="gaussian")[0]
    reference = torch.softmax(mean_logits, dim=0).amax(dim=0)
    ours = sliding_window_predict(image, network, 64, package.labels.num_classes, confidence=True).confidence
    assert ours.shape == reference.shape and float(reference.max() - reference.min()) > 0.05  # not a constant map
    difference = (ours - reference).abs()
    assert float(difference.max()) < 0.02 and float(difference.mean()) < 1e-3  # float16 logit sums


def tied_package(folder: Path, tie: bool) -> Path:
    """A tiny package whose liver and spleen logits are equal everywhere (``tie``), or whose spleen is held down."""
    package = make_package(folder)
    state = package.build_network().state_dict()
    liver, spleen = package.labels.value_of("liver"), package.labels.value_of("spleen")
    state["out.conv.conv.weight"][spleen] = state["out.conv.conv.weight"][liver]
    state["out.conv.conv.bias"][liver] += 3.0
    state["out.conv.conv.bias"][spleen] = state["out.conv.conv.bias"][liver] - (0.0 if tie else 6.0)
    package.save(folder, state)
    return folder


@pytest.mark.parametrize("tie", [True, False])
def test_segment_writes_the_confidence_on_the_input_grid_and_it_is_low_where_two_classes_tie(tmp_path, shared_data, tie):
    model = tied_package(tmp_path / "model", tie)
    source_path = shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"
    events = tmp_path / "events.jsonl"
    result = run_cli("segment", "--model", str(model), "--input", str(source_path), "--output", str(tmp_path / "out.seg.nrrd"),
                     "--confidence", str(tmp_path / "confidence.nrrd"), "--device", "cpu", "--events", str(events))
    assert result.returncode == 0, result.stderr
    source, confidence = sitk.ReadImage(str(source_path)), sitk.ReadImage(str(tmp_path / "confidence.nrrd"))
    assert confidence.GetSize() == source.GetSize() and confidence.GetPixelID() == sitk.sitkFloat32
    assert np.allclose(confidence.GetSpacing(), source.GetSpacing()) and np.allclose(confidence.GetOrigin(), source.GetOrigin(), atol=1e-3)
    assert np.allclose(confidence.GetDirection(), source.GetDirection())
    values = sitk.GetArrayFromImage(confidence)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.seg.nrrd")))
    assert values.min() >= 0.0 and values.max() <= 1.0
    liver = labels == 1
    assert liver.mean() > 0.1  # the raised bias makes liver win over most of the body
    summary = read_events(events)[-1]["confidence"]
    if tie:  # p(liver) = p(spleen) <= 0.5 wherever liver wins the tie
        assert values[liver].max() <= 0.5 + 1e-3 and summary["liver"]["mean"] <= 0.5 and summary["liver"]["below"] == 1.0
        assert "confidence 0.4" in result.stderr or "confidence 0.5" in result.stderr  # the terminal summary shows it
    else:
        assert summary["liver"]["mean"] > 0.6 and summary["liver"]["below"] < 0.5


def test_known_anatomy_is_written_with_slicer_terminology_and_colours(tmp_path):
    """The header string follows vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry (7 parts joined by '~',
    codes as scheme^value^meaning); codes and colours are those of Slicer's General Anatomy list."""
    from swinssl.labels.segmentation_file import write_label_map

    table = LabelTable.from_names(["Liver", "kidney_left", "tumour"])
    array = np.zeros((4, 5, 6), np.uint8)
    array[1, 1:3, 1:3], array[2, 2:4, 2:4], array[3, 0, 0] = 1, 2, 3
    image = sitk.GetImageFromArray(array)
    output = write_label_map(image, table, tmp_path / "organs.seg.nrrd")[0]
    header = output.read_bytes().split(b"\n\n")[0].decode("latin-1")
    assert ("Segment0_Tags:=TerminologyEntry:Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical "
            "Structure~SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^|") in header
    assert "~SCT^64033007^Kidney~SCT^7771000^Left~" in header
    segments = slicerio.read_segmentation(str(output), skip_voxels=True)["segments"]
    assert segments[0]["terminology"]["type"] == ["SCT", "10200004", "Liver"]
    assert np.allclose(segments[0]["color"], np.array([221, 130, 101]) / 255, atol=1e-3)
    assert np.allclose(segments[1]["color"], np.array([150, 60, 60]) / 255, atol=1e-3)
    assert "terminology" not in segments[2] or segments[2]["terminology"] is None  # no code is made up for unknown names
    demo = load_package(Path(__file__).parents[1] / "swinssl" / "resources" / "demo_organs")
    assert all(label.terminology for label in demo.labels.labels)  # every demo organ carries its code


def test_segments_read_into_slicer_get_slicer_names_colours_and_the_terminology_its_dicom_export_reads(tmp_path, mrml_scene):
    """On a real MRML scene: a model's own spellings (the BTCV bundle's "Left Kideny", TotalSegmentator's "kidney_right")
    become the names Slicer gives those structures, which Slicer's own terminology logic finds in its General Anatomy
    list (bundled with trame-slicer) with the same codes; the model's name stays in a tag; the TerminologyEntry tag
    deserializes as Slicer's DICOM SEG export (DICOMSegmentationPlugin) reads it; unknown names are left alone."""
    import slicer
    import trame_slicer
    import vtk

    from swinssl.finetune.parent import value_map
    from swinssl.labels.anatomy import standard_anatomy
    from swinssl.labels.segmentation_file import write_label_map
    from swinssl_slicer.mrml_io import MODEL_NAME_TAG, read_segmentation, write_segmentation

    model_names = ["Left Kideny", "kidney_right", "IVC", "tumour"]
    table = LabelTable.from_names(model_names)
    array = np.zeros((4, 5, 6), np.uint8)
    array[1, 1:3, 1:3], array[2, 2:4, 2:4], array[3, 0, 0], array[0, 4, 5] = 1, 2, 3, 4
    path = write_label_map(sitk.GetImageFromArray(array), table, tmp_path / "result.seg.nrrd")[0]
    node = read_segmentation(mrml_scene, path, "result", algorithm="btcv-segmentation")
    segmentation = node.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    assert [s.GetName() for s in segments] == ["left kidney", "right kidney", "Inferior vena cava", "tumour"]

    def tag(segment, name: str) -> str:
        value = vtk.mutable("")
        assert segment.GetTag(name, value), name
        return str(value)

    assert [tag(s, MODEL_NAME_TAG) for s in segments] == model_names
    assert np.allclose(segments[0].GetColor(), standard_anatomy("left kidney")[0], atol=1e-3)
    assert all(tag(s, "DICOM.SegmentAlgorithmType") == "AUTOMATIC" and tag(s, "DICOM.SegmentAlgorithmName") == "btcv-segmentation" for s in segments)

    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    general = logic.LoadTerminologyFromFile(str(Path(trame_slicer.__file__).parent / "resources" / "terminologies" /
                                                "SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.term.json"))
    for segment in segments[:2]:
        ours, slicers = slicer.vtkSlicerTerminologyEntry(), slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(tag(segment, slicer.vtkSegment.GetTerminologyEntryTagName()), ours)
        assert logic.FindTypeInTerminologyBy3dSlicerLabel(general, segment.GetName(), slicers)  # Slicer's own name for it
        for entry in (ours, slicers):
            codes = [(entry.GetCategoryObject().GetCodeValue(), entry.GetTypeObject().GetCodeValue(), entry.GetTypeModifierObject().GetCodeValue())]
            assert codes == [("123037004", "64033007", "7771000" if segment is segments[0] else "24028007")]  # Kidney, Left / Right
    ivc = slicer.vtkSlicerTerminologyEntry()
    assert logic.DeserializeTerminologyEntry(tag(segments[2], slicer.vtkSegment.GetTerminologyEntryTagName()), ivc)
    assert (ivc.GetTypeObject().GetCodeValue(), ivc.GetTypeObject().GetCodeMeaning()) == ("64131007", "Inferior vena cava")

    # the web app's download and the training set keep Slicer's names; the model's classes still match them
    written = slicerio.read_segmentation(str(write_segmentation(node, tmp_path / "edited.seg.nrrd")), skip_voxels=True)["segments"]
    assert [s["name"] for s in written] == ["left kidney", "right kidney", "Inferior vena cava", "tumour"]
    assert written[0]["terminology"]["typeModifier"] == ["SCT", "7771000", "Left"]
    tuned = LabelTable.from_names([s["name"] for s in written])
    assert [tuned.value_of(name) for name in model_names] == [1, 2, 3, 4]
    btcv = ModelPackage("btcv", table, [InputChannel("CT", "ct")], (1.5, 1.5, 2.0), 96, 48)
    assert value_map(btcv, tuned).tolist() == [0, 1, 2, 3, 4]  # a fine-tune starts each class from the model's own

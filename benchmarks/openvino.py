"""Workload: the OpenVINO backend against PyTorch and MONAI on the CPU, in one process, as ratios to MONAI.

- per window, paper size (feature 48, ROI 96, 14 classes, random weights, seed 0): one 96^3 window of the real abdomen
  CT through MONAI's plain SwinUNETR (the reference), ours on PyTorch (fused attention, channels-last), ours on
  OpenVINO fp32 and bf16; arg-max agreement with the reference and the largest logit difference; the first-run
  conversion and the cached load of that network are timed too.
- end to end, the full 512 x 512 real chest CT (chest_ct_lung1.nrrd, 512 x 512 x 48 at 0.57 x 0.57 x 5 mm) with the
  carried demo organ model (feature 12, ROI 64): MONAI's ``sliding_window_inference`` + softmax + arg-max on the whole
  model-grid volume vs :func:`swinssl.inference.segment.segment_image` on each backend. Resampling onto the model grid
  and back is the same code on every row (reading the file is not timed); the OpenVINO rows load the cached network
  (its conversion is the first-run figure). Label agreement with MONAI over all voxels and over the voxels either
  labels as an organ, and each row's peak RSS above the memory before it (Linux: VmHWM reset through clear_refs).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference

from benchmarks.common import CLASSES, CT_DIR, process_memory, timed
from benchmarks.inference import load_volume
from swinssl.events import EventLog
from swinssl.inference.openvino_backend import CACHE_ENV, compiled_network, native_bf16
from swinssl.inference.segment import SegmentOptions, read_inputs, segment_image, to_input_grid, to_model_grid
from swinssl.labels.table import LabelTable
from swinssl.network import build_swin_unetr
from swinssl.package import InputChannel, ModelPackage, load_package

FEATURE, ROI = 48, 96
DEMO_MODEL = Path(__file__).resolve().parents[1] / "swinssl" / "resources" / "demo_organs"
CHEST_CT = CT_DIR / "chest_ct_lung1.nrrd"


def cpu_flags() -> dict:
    """The CPU's bf16 and AMX flags (/proc/cpuinfo) and OpenVINO's view of them."""
    import openvino

    flags = set(next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split())
    wanted = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
    return {**{flag: flag in flags for flag in wanted}, "openvino": openvino.get_version(),
            "openvino_capabilities": openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")}


def peak_above(function):
    """(seconds, result, peak RSS above the RSS before the call in bytes or None where the peak cannot be reset)."""
    before = process_memory("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS
        resettable = True
    except OSError:
        resettable = False
    seconds, result = timed(function, 1)
    return seconds, result, (process_memory("VmHWM") - before) if resettable else None


def paper_size_package(folder: Path) -> tuple[ModelPackage, torch.nn.Module]:
    """A saved paper-size package with random weights (seed 0) and MONAI's plain network holding the same weights."""
    torch.manual_seed(0)
    plain = build_swin_unetr(1, CLASSES, FEATURE, fused_attention=False).eval()
    names = [f"class_{value}" for value in range(1, CLASSES)]
    package = ModelPackage("paper-size", LabelTable.from_names(names), [InputChannel("CT", "ct")], (1.5, 1.5, 2.0), ROI, FEATURE)
    package.save(folder, plain.state_dict())
    return package, plain


def per_window(folder: Path, repeats: int) -> dict:
    volume, description = load_volume(quick=False)
    starts = [(n - ROI) // 2 for n in volume.shape[1:]]
    window = volume[(slice(None), *(slice(s, s + ROI) for s in starts))][None].contiguous()  # (1, 1, 96, 96, 96)
    package, plain = paper_size_package(folder / "paper-size")
    ours = package.build_network().to(memory_format=torch.channels_last_3d)
    rows = {}
    with torch.no_grad():
        plain(window)  # warm-up
        rows["monai"] = timed(lambda: plain(window), repeats)
        channels_last = window.contiguous(memory_format=torch.channels_last_3d)
        ours(channels_last)
        rows["torch"] = timed(lambda: ours(channels_last), repeats)
    started = time.perf_counter()
    events = EventLog()
    network = compiled_network(package, "fp32", events)
    first_run_s = time.perf_counter() - started
    started = time.perf_counter()
    network = compiled_network(package, "fp32", events)
    cached_load_s = time.perf_counter() - started
    network(window)
    rows["openvino_fp32"] = timed(lambda: network(window), repeats)
    if native_bf16():
        network = compiled_network(package, "bf16", events)
        network(window)
        rows["openvino_bf16"] = timed(lambda: network(window), repeats)
    reference_s, reference = rows["monai"]
    figures = {"volume": f"{description}, one central {ROI}^3 window", "model": {"feature_size": FEATURE, "roi": ROI, "classes": CLASSES},
               "repeats": repeats, "first_run_convert_compile_s": first_run_s, "cached_load_s": cached_load_s, "rows": {}}
    for name, (seconds, logits) in rows.items():
        figures["rows"][name] = {"s": seconds, "speedup": reference_s / seconds,
                                 "label_agreement": float((logits.argmax(1) == reference.argmax(1)).float().mean()),
                                 "max_abs_logit_difference": float((logits - reference).abs().max())}
    return figures


def monai_end_to_end(images: list[sitk.Image], package: ModelPackage, plain: torch.nn.Module) -> sitk.Image:
    """MONAI's pipeline on the whole model-grid volume: sliding_window_inference (Gaussian, 4 windows a batch), softmax,
    arg-max; the same resampling onto the model grid and back as ours."""
    array, geometry = to_model_grid(images, package)
    with torch.no_grad():
        logits = sliding_window_inference(torch.from_numpy(array)[None], package.roi, 4, plain, overlap=0.5, mode="gaussian")
        labels = torch.softmax(logits, 1).argmax(1)[0].to(torch.uint8).numpy()
    return to_input_grid(labels, geometry, images[0])


def end_to_end() -> dict:
    package = load_package(DEMO_MODEL)
    images = read_inputs([CHEST_CT], package)
    plain = build_swin_unetr(1, package.labels.num_classes, package.feature_size, fused_attention=False).eval()
    plain.load_state_dict(package.build_network().state_dict())
    started = time.perf_counter()
    compiled_network(package, "fp32", EventLog())  # the first run's conversion, outside the timed rows
    first_run_s = time.perf_counter() - started
    if native_bf16():
        compiled_network(package, "bf16", EventLog())  # compiled once for bf16 too, as a user's second bf16 run finds it
    runs = {"monai": lambda: monai_end_to_end(images, package, plain)}
    for name, backend, precision in (("torch", "torch", "fp32"), ("openvino_fp32", "openvino", "fp32"), ("openvino_bf16", "openvino", "bf16")):
        options = SegmentOptions(device="cpu", backend=backend, precision=precision)
        runs[name] = lambda options=options: segment_image(images, package, options, EventLog()).labels
    if not native_bf16():
        del runs["openvino_bf16"]
    measured = {name: peak_above(run) for name, run in runs.items()}
    reference_s, reference_image, reference_peak = measured["monai"]
    reference = sitk.GetArrayFromImage(reference_image)
    ours_torch = sitk.GetArrayFromImage(measured["torch"][1])
    figures = {"volume": f"{CHEST_CT.name} {images[0].GetSize()} at {tuple(round(s, 3) for s in images[0].GetSpacing())} mm",
               "model": package.name, "first_run_convert_compile_s": first_run_s, "rows": {}}
    for name, (seconds, image, peak) in measured.items():
        labels = sitk.GetArrayFromImage(image)
        organs = (labels > 0) | (reference > 0)
        figures["rows"][name] = {"s": seconds, "speedup": reference_s / seconds, "label_agreement": float((labels == reference).mean()),
                                 "organ_voxel_agreement": float((labels == reference)[organs].mean()) if organs.any() else None,
                                 "organ_voxels": int(organs.sum()), "peak_above_start_bytes": peak,
                                 "label_agreement_with_ours_on_torch": float((labels == ours_torch).mean()),
                                 "peak_ratio": peak / reference_peak if peak is not None and reference_peak else None}
    return figures


def run(repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="swinssl-openvino-bench-") as folder:
        os.environ[CACHE_ENV] = str(Path(folder) / "cache")  # an empty cache: the first run converts
        return {"cpu_flags": cpu_flags(), "threads": torch.get_num_threads(), "end_to_end": end_to_end(),
                "per_window": per_window(Path(folder), repeats)}

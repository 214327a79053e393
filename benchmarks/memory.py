"""Workload 2: peak resident memory segmenting a large CT-like volume, ours vs MONAI's bundle pipeline.

Each pipeline runs in its own process (``python -m benchmarks.memory ours|reference PACKAGE IMAGE OUT``)
and reports its own peak (VmHWM) and its resident size after imports and model building. The
reference is the model-zoo bundle's inference: LoadImaged, Orientationd, Spacingd,
ScaleIntensityRanged, whole-volume ``sliding_window_inference``, softmax, Invertd (float class
maps back to the input grid), AsDiscreted arg-max, SaveImaged. Ours is ``swinssl segment``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from benchmarks.common import CLASSES, process_memory
from swinssl.labels.table import LabelTable
from swinssl.network import build_swin_unetr
from swinssl.package import InputChannel, ModelPackage, load_package


def ct_like_volume(shape_kji: tuple[int, int, int], spacing: float, path: Path) -> Path:
    """An int16 CT-like volume: air around an elliptic body (40 HU) with a spine (700 HU) and lungs
    (-850 HU), written uncompressed so that reading measures decoding, not gzip."""
    k, j, i = shape_kji
    y, x = np.ogrid[:j, :i]
    body = ((x - i / 2) / (0.42 * i)) ** 2 + ((y - j / 2) / (0.32 * j)) ** 2 < 1
    lungs = (((abs(x - i / 2) - 0.18 * i) / (0.12 * i)) ** 2 + ((y - 0.45 * j) / (0.16 * j)) ** 2) < 1
    spine = ((x - i / 2) / (0.05 * i)) ** 2 + ((y - 0.7 * j) / (0.05 * j)) ** 2 < 1
    axial = np.full((j, i), -1000, np.int16)
    axial[body] = 40
    axial[body & lungs] = -850
    axial[spine] = 700
    volume = np.broadcast_to(axial, (k, j, i)).copy()
    volume[: k // 10] = -1000  # air above and below the body
    volume[-k // 10 :] = -1000
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((spacing,) * 3)
    sitk.WriteImage(image, str(path), useCompression=False)
    return path


def ours(package_dir: str, image: str, out: str) -> dict:
    from swinssl.events import EventLog
    from swinssl.inference.segment import SegmentOptions, segment_files

    package = load_package(package_dir)
    package.build_network()
    baseline = process_memory("VmRSS")
    started = time.perf_counter()
    segment_files([Path(image)], Path(out) / "ours.seg.nrrd", package, SegmentOptions(device="cpu"), EventLog(None))
    return {"baseline": baseline, "peak": process_memory("VmHWM"), "seconds": time.perf_counter() - started}


def reference(package_dir: str, image: str, out: str) -> dict:
    from monai.inferers import sliding_window_inference
    from monai.transforms import (Activationsd, AsDiscreted, Compose, Invertd, LoadImaged, Orientationd, SaveImaged,
                                  ScaleIntensityRanged, Spacingd)

    package = load_package(package_dir)
    network = build_swin_unetr(1, package.labels.num_classes, package.feature_size, fused_attention=False)
    network.load_state_dict(package.build_network().state_dict())
    network.eval()
    baseline = process_memory("VmRSS")
    started = time.perf_counter()
    preprocessing = Compose([
        LoadImaged("image", ensure_channel_first=True, image_only=False),
        Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=package.spacing, mode="bilinear"),
        ScaleIntensityRanged("image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
    ])
    data = preprocessing({"image": image})
    with torch.no_grad():
        data["pred"] = sliding_window_inference(data["image"][None], package.roi, 4, network, overlap=0.5, mode="gaussian")[0]
    postprocessing = Compose([
        Activationsd("pred", softmax=True),
        Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
        AsDiscreted("pred", argmax=True),
        SaveImaged("pred", output_dir=out, output_postfix="reference", separate_folder=False, print_log=False),
    ])
    postprocessing(data)
    return {"baseline": baseline, "peak": process_memory("VmHWM"), "seconds": time.perf_counter() - started}


def probe(which: str, package_dir: Path, image: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.memory", which, str(package_dir), str(image), str(out)],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise RuntimeError(f"the {which} memory probe failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict:
    """Quick: 256 x 256 x 300 at 1.6 mm, 14 classes at 8 mm; full: 512 x 512 x 600 at 0.8 mm, 6 classes at 4 mm.

    The full run uses 6 classes because the reference holds about three float32 copies of the
    class maps on the input grid: with 14 classes that is about 26 GB, more than the 24 GB
    benchmark machine has.
    """
    shape, spacing, model_spacing, classes = ((300, 256, 256), 1.6, 8.0, CLASSES) if quick else ((600, 512, 512), 0.8, 4.0, 6)
    with tempfile.TemporaryDirectory(prefix="swinssl-memory-") as folder:
        folder = Path(folder)
        image = ct_like_volume(shape, spacing, folder / "ct.nii")
        torch.manual_seed(0)
        labels = LabelTable.from_names([f"class_{n}" for n in range(1, classes)])
        package = ModelPackage("memory-benchmark", labels, [InputChannel("CT", "ct")], (model_spacing,) * 3, 64, 12)
        package.save(folder / "model", build_swin_unetr(1, classes, 12).state_dict())
        reference_result = probe("reference", folder / "model", image, folder)
        ours_result = probe("ours", folder / "model", image, folder)
    return {
        "volume": f"{shape[2]} x {shape[1]} x {shape[0]} int16 at {spacing} mm (CT-like phantom)",
        "model": f"SwinUNETR feature 12, ROI 64, {classes} classes, {model_spacing} mm",
        "reference": reference_result,
        "ours": ours_result,
        "peak_memory_ratio": ours_result["peak"] / reference_result["peak"],
        "peak_above_baseline_ratio": (ours_result["peak"] - ours_result["baseline"]) / (reference_result["peak"] - reference_result["baseline"]),
    }


if __name__ == "__main__":
    which, package_dir, image, out = sys.argv[1:5]
    print(json.dumps((ours if which == "ours" else reference)(package_dir, image, out)))

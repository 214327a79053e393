"""Workload: bf16 autocast on the CPU against fp32 for inference, both sides ours (fused attention, channels-last).

- speed: one batch of 2 windows of the paper-size network (feature 48, ROI 96, 14 classes, random weights);
- agreement: the trained demo organ model (`swinssl/resources/demo_organs`) segmenting the real abdomen CT
  with our sliding window, fp32 vs bf16: voxels with equal labels over the whole grid, over the voxels either run
  labels as an organ, and per organ (the bound for keeping a lever is >= 99.9 % on the real CT with trained weights).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.common import CLASSES, CT_DIR, timed
from swinssl.inference.sliding_window import sliding_window_labels
from swinssl.inference.segment import read_inputs, to_model_grid
from swinssl.network import build_swin_unetr
from swinssl.package import load_package

FEATURE, ROI, BATCH = 48, 96, 2
DEMO_MODEL = Path(__file__).resolve().parents[1] / "swinssl" / "resources" / "demo_organs"


def cpu_has_bf16() -> bool:
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run(repeats: int) -> dict:
    torch.manual_seed(0)
    network = build_swin_unetr(1, CLASSES, FEATURE).eval().to(memory_format=torch.channels_last_3d)
    windows = torch.rand(BATCH, 1, ROI, ROI, ROI).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        network(windows)  # warm-up: oneDNN primitives
        fp32_s, _ = timed(lambda: network(windows), repeats)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            network(windows)
            bf16_s, _ = timed(lambda: network(windows), repeats)

    package = load_package(DEMO_MODEL)
    array, _ = to_model_grid(read_inputs([CT_DIR / "abdomen_ct_3mm.nii.gz"], package), package, fast=False)
    image = torch.from_numpy(np.ascontiguousarray(array))
    labels = {}
    for name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
        labels[name] = sliding_window_labels(image, package.build_network(), package.roi, package.labels.num_classes, amp_dtype=amp).numpy()
    equal = labels["fp32"] == labels["bf16"]
    per_organ = {}
    for label in package.labels.labels:
        either = (labels["fp32"] == label.value) | (labels["bf16"] == label.value)
        if either.any():
            per_organ[label.name] = float(equal[either].mean())
    return {
        "cpu_bf16": cpu_has_bf16(), "repeats": repeats,
        "paper_size_fp32_s": fp32_s, "paper_size_bf16_s": bf16_s, "bf16_speedup": fp32_s / bf16_s,
        "trained_model": package.name, "volume": "abdomen_ct_3mm on the demo model's grid",
        "label_agreement": float(equal.mean()), "foreground_agreement": float(equal[(labels["fp32"] > 0) | (labels["bf16"] > 0)].mean()),
        "organ_agreement": per_organ,
    }

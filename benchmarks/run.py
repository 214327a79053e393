"""``python -m benchmarks.run [--quick] [--json OUT.json]``: ours vs the reference, same process, same weights and input.

Implemented so far: workload 1 (sliding-window inference on the real abdomen CT). Memory, pretraining
throughput and torchrun scaling are listed in the JSON as null until they are written.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference
from torch.utils.flop_counter import FlopCounterMode

from swinssl.inference.sliding_window import sliding_window_labels
from swinssl.network import build_swin_unetr
from swinssl.preprocessing.intensity import IntensitySettings, normalize_intensity
from swinssl.preprocessing.spatial import foreground_box, image_to_array, ras_grid, resample_onto

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
QUICK_CT = SHARED_DATA / "abdomen_ct_small_3mm.nii.gz"  # 30 slices
FULL_CT = SHARED_DATA / "abdomen_ct_3mm.nii.gz"
CLASSES = 14
AIR_THRESHOLD = 0.25  # -500 HU in the 0..1 CT window


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": torch.get_num_threads(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def timed(function, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls (warm-up is done once by the caller) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def inference_workload(quick: bool, repeats: int) -> dict:
    feature, roi = (12, 64) if quick else (48, 96)
    image = sitk.ReadImage(str(QUICK_CT if quick else FULL_CT))
    grid = ras_grid(image, (1.5, 1.5, 2.0))
    volume = torch.from_numpy(normalize_intensity(image_to_array(resample_onto(image, grid)), IntensitySettings("ct")))  # (1, X, Y, Z)
    torch.manual_seed(0)
    network = build_swin_unetr(1, CLASSES, feature).eval()

    def reference():
        with torch.no_grad():
            logits = sliding_window_inference(volume[None], roi, 4, network, overlap=0.5, mode="gaussian")
            return torch.softmax(logits, 1).argmax(1)[0]

    def ours():
        start, end = foreground_box(volume.numpy(), margin=4)
        box = tuple(slice(s, e) for s, e in zip(start, end))
        labels = torch.zeros(volume.shape[1:], dtype=torch.uint8)
        labels[box] = sliding_window_labels(volume[(slice(None), *box)].contiguous(), network, roi, CLASSES, 0.5, body_threshold=AIR_THRESHOLD)
        return labels

    with torch.no_grad():  # warm-up: one window through the network
        network(torch.zeros(1, 1, roi, roi, roi))
    reference_s, reference_labels = timed(reference, repeats)
    ours_s, our_labels = timed(ours, repeats)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(torch.zeros(1, 1, roi, roi, roi))
    voxels = int(volume[0].numel())
    return {
        "model": {"feature_size": feature, "roi": roi, "classes": CLASSES, "overlap": 0.5},
        "volume": (QUICK_CT if quick else FULL_CT).name + " at 1.5 x 1.5 x 2 mm",
        "volume_shape": list(volume.shape[1:]),
        "repeats": repeats,
        "reference_s": reference_s,
        "ours_s": ours_s,
        "reference_voxels_per_s": voxels / reference_s,
        "ours_voxels_per_s": voxels / ours_s,
        "inference_speedup": reference_s / ours_s,
        "label_agreement": float((our_labels.long() == reference_labels).float().mean()),
        "flops_per_window": counter.get_total_flops(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small model (feature 12, ROI 64); minutes on 2 CPU cores")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    inference = inference_workload(args.quick, repeats)
    result = {
        "machine": machine(), "quick": args.quick, "date": time.strftime("%Y-%m-%d"),
        "inference": inference, "inference_speedup": inference["inference_speedup"], "label_agreement": inference["label_agreement"],
        "peak_memory_ratio": None, "pretrain_speedup": None, "data_wait_fraction": None, "scaling": None,
    }
    print(f"{'workload':12s} {'reference':>12s} {'ours':>12s} {'ratio':>7s}  agreement")
    print(f"{'inference':12s} {inference['reference_s']:11.2f}s {inference['ours_s']:11.2f}s {inference['inference_speedup']:6.2f}x  {inference['label_agreement']:.4%}")
    print("memory, pretraining and scaling workloads: not implemented yet")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

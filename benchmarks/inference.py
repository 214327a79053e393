"""Workload 1: sliding-window inference on the real abdomen CT, ours vs MONAI's tutorial pipeline.

Both get the same normalised volume (resampled to 1.5 x 1.5 x 2 mm) and the same weights. The
reference is the plain MONAI SwinUNETR under ``sliding_window_inference`` (Gaussian blending,
4 windows per batch) on the whole volume, softmax, arg-max. Ours: fused attention, channels-last
windows, foreground crop, air windows skipped, float16 logit sums.
"""

from __future__ import annotations

import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import CLASSES, CT_DIR, timed
from swinssl.inference.sliding_window import sliding_window_labels, window_slices
from swinssl.network import build_swin_unetr
from swinssl.preprocessing.intensity import IntensitySettings, normalize_intensity
from swinssl.preprocessing.spatial import foreground_box, image_to_array, ras_grid, resample_onto

AIR_THRESHOLD = 0.25  # -500 HU in the 0..1 CT window
QUICK_BOX = 160  # quick mode keeps the central 160 x 160 voxels in-plane (16 windows of 64)


def load_volume(quick: bool) -> tuple[torch.Tensor, str]:
    """(1, X, Y, Z) normalised CT in RAS at 1.5 x 1.5 x 2 mm, and its description."""
    name = "abdomen_ct_small_3mm.nii.gz" if quick else "abdomen_ct_3mm.nii.gz"
    image = sitk.ReadImage(str(CT_DIR / name))
    volume = normalize_intensity(image_to_array(resample_onto(image, ras_grid(image, (1.5, 1.5, 2.0)))), IntensitySettings("ct"))
    description = f"{name} at 1.5 x 1.5 x 2 mm"
    if quick:
        starts = [(n - QUICK_BOX) // 2 for n in volume.shape[1:3]]
        volume = volume[:, starts[0] : starts[0] + QUICK_BOX, starts[1] : starts[1] + QUICK_BOX]
        description += f", central {QUICK_BOX} x {QUICK_BOX} in-plane"
    return torch.from_numpy(volume.copy()), description


def reference_pipeline(volume: torch.Tensor, network: torch.nn.Module, roi: int) -> torch.Tensor:
    """MONAI's tutorial inference: ``sliding_window_inference`` (Gaussian, 4 windows a batch), softmax, arg-max.
    ``volume``: (1, X, Y, Z); returns (X, Y, Z) labels."""
    with torch.no_grad():
        logits = sliding_window_inference(volume[None], roi, 4, network, overlap=0.5, mode="gaussian")
        return torch.softmax(logits, 1).argmax(1)[0]


def our_pipeline(volume: torch.Tensor, network: torch.nn.Module, roi: int) -> torch.Tensor:
    """Ours: windows outside the foreground box and air windows skipped, fused attention, channels-last, float16 sums.
    (X, Y, Z) labels."""
    return sliding_window_labels(volume, network, roi, CLASSES, 0.5, body_threshold=AIR_THRESHOLD, foreground=foreground_box(volume.numpy(), margin=4))


def warm_up(plain: torch.nn.Module, fast: torch.nn.Module, roi: int) -> None:
    """One window through each network, in the memory layout each will use."""
    with torch.no_grad():
        plain(torch.zeros(1, 1, roi, roi, roi))
        fast.to(memory_format=torch.channels_last_3d)(torch.zeros(1, 1, roi, roi, roi).contiguous(memory_format=torch.channels_last_3d))


def peak_flops(seconds: float = 1.0) -> float:
    """The machine's attainable float32 matrix-multiply rate (FLOP/s), from a 2048^3 GEMM."""
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    a @ b
    seconds_per, _ = timed(lambda: a @ b, 5)
    return 2 * 2048**3 / seconds_per


def run(quick: bool, repeats: int) -> dict:
    feature, roi = (12, 64) if quick else (48, 96)
    volume, description = load_volume(quick)
    torch.manual_seed(0)
    plain = build_swin_unetr(1, CLASSES, feature, fused_attention=False).eval()
    fast = build_swin_unetr(1, CLASSES, feature).eval()
    fast.load_state_dict(plain.state_dict())

    warm_up(plain, fast, roi)
    reference_s, reference_labels = timed(lambda: reference_pipeline(volume, plain, roi), repeats)
    ours_s, our_labels = timed(lambda: our_pipeline(volume, fast, roi), repeats)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        plain(torch.zeros(1, 1, roi, roi, roi))
    windows = windows_run(volume, roi)
    flops = counter.get_total_flops()
    peak = peak_flops()
    voxels = int(volume[0].numel())
    return {
        "model": {"feature_size": feature, "roi": roi, "classes": CLASSES, "overlap": 0.5},
        "volume": description,
        "volume_shape": list(volume.shape[1:]),
        "repeats": repeats,
        "reference_s": reference_s,
        "ours_s": ours_s,
        "reference_voxels_per_s": voxels / reference_s,
        "ours_voxels_per_s": voxels / ours_s,
        "inference_speedup": reference_s / ours_s,
        "label_agreement": float((our_labels.long() == reference_labels).float().mean()),
        "flops_per_window": flops,
        "windows": windows,
        "reference_flops_per_s": flops * windows / reference_s,
        "machine_peak_flops_per_s": peak,
        "reference_share_of_peak": flops * windows / reference_s / peak,
    }


def windows_run(volume: torch.Tensor, roi: int) -> int:
    """Windows MONAI places over the whole (padded) volume at overlap 0.5."""
    return len(window_slices(tuple(max(n, roi) for n in volume.shape[1:]), roi, 0.5))

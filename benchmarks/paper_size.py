"""Workload 5: inference at the size users run (feature 48, ROI 96, 14 classes: the shape of the model-zoo BTCV
bundle) on a crop of the real abdomen CT that holds 2 x 2 x 1 windows, so that it takes minutes on 2 cores.

Two ratios, reference time / our time, with the same random weights:
- model only: one batch of 2 windows through MONAI's plain SwinUNETR and through ours (fused attention, channels-last);
- end to end: :func:`benchmarks.inference.reference_pipeline` vs :func:`benchmarks.inference.our_pipeline` on the crop
  (all body: no air window to skip, so the gain is the model's alone).
"""

from __future__ import annotations

import torch

from benchmarks.common import CLASSES, timed
from benchmarks.inference import load_volume, our_pipeline, reference_pipeline, warm_up
from swinssl.network import build_swin_unetr

FEATURE, ROI = 48, 96
CROP = (144, 144, 96)  # (X, Y, Z) voxels at 1.5 x 1.5 x 2 mm around the volume's centre: 2 x 2 x 1 windows at overlap 0.5
MODEL_BATCH = 2


def run(repeats: int) -> dict:
    volume, description = load_volume(quick=False)
    starts = [(n - c) // 2 for n, c in zip(volume.shape[1:], CROP)]
    crop = volume[(slice(None), *(slice(s, s + c) for s, c in zip(starts, CROP)))].contiguous()
    torch.manual_seed(0)
    plain = build_swin_unetr(1, CLASSES, FEATURE, fused_attention=False).eval()
    fast = build_swin_unetr(1, CLASSES, FEATURE).eval()
    fast.load_state_dict(plain.state_dict())
    warm_up(plain, fast, ROI)
    windows = crop[None].expand(MODEL_BATCH, -1, -1, -1, -1)[..., :ROI, :ROI, :ROI].contiguous()
    with torch.no_grad():
        plain_s, plain_logits = timed(lambda: plain(windows), repeats)
        fast_s, fast_logits = timed(lambda: fast(windows.contiguous(memory_format=torch.channels_last_3d)), repeats)
    reference_s, reference_labels = timed(lambda: reference_pipeline(crop, plain, ROI), repeats)
    ours_s, our_labels = timed(lambda: our_pipeline(crop, fast, ROI), repeats)
    return {
        "model": {"feature_size": FEATURE, "roi": ROI, "classes": CLASSES, "overlap": 0.5},
        "volume": f"{description}, central crop {CROP[0]} x {CROP[1]} x {CROP[2]}",
        "repeats": repeats,
        "model_batch": MODEL_BATCH,
        "model_reference_s": plain_s,
        "model_ours_s": fast_s,
        "model_only_speedup": plain_s / fast_s,
        "model_label_agreement": float((plain_logits.argmax(1) == fast_logits.argmax(1)).float().mean()),
        "reference_s": reference_s,
        "ours_s": ours_s,
        "end_to_end_speedup": reference_s / ours_s,
        "label_agreement": float((our_labels.long() == reference_labels).float().mean()),
    }

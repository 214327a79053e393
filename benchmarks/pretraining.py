"""Workload 3: pretraining throughput, ours vs a loop shaped like the research code.

The reference decodes, reorients, resamples, scales and crops each sampled volume with MONAI
transforms on every step, in fp32, with MONAI's plain window attention. Ours is
``run_pretraining``: volumes preprocessed once into a memory-mapped cache, batches prefetched in
a thread, fused window attention. Model, batch, ROI, views, losses and optimiser are the same;
both run their steps on the same three real CT files. A second reference is what a careful user
does: MONAI's ``CacheDataset`` holding the preprocessed volumes in memory, only the crop per step.
The real-shaped variant runs the same on full-resolution CTs (512 x 512) at their native spacing.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from monai.data import CacheDataset
from monai.transforms import (
    Compose,
    CropForeground,
    CropForegroundd,
    LoadImage,
    LoadImaged,
    Orientation,
    Orientationd,
    RandSpatialCrop,
    RandSpatialCropd,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    Spacing,
    Spacingd,
    SpatialPad,
    SpatialPadd,
)

from benchmarks.common import CT_DIR
from swinssl.events import read_events
from swinssl.ssl.augment import CutoutSettings, inner_cutout, rotate_views
from swinssl.ssl.losses import LossWeights, pretext_losses
from swinssl.ssl.model import SSLModel
from swinssl.training.config import PretrainConfig
from swinssl.training.pretrain import run_pretraining
from swinssl.training.schedule import build_optimizer

FILES = ("abdomen_ct_3mm.nii.gz", "abdomen_ct_small_3mm.nii.gz", "chest_ct_lung1.nrrd")
# Full-resolution CTs at their native spacing: 512 x 512 x 48 at 0.57 x 0.57 x 5 mm and a 512 x 512 x 20 DICOM series at 0.98 x 0.98 x 2 mm.
REAL_SHAPED_FILES = ("chest_ct_lung1.nrrd", "abdomen_ct_dicom_series")


def settings(quick: bool, real_shaped: bool = False) -> dict:
    if real_shaped:  # the data side at full resolution; feature size 12 keeps a CPU step short
        return {"roi": 64 if quick else 96, "feature_size": 12, "spacing": None, "batch_size": 2, "timed_steps": 4}
    if quick:
        return {"roi": 32, "feature_size": 12, "spacing": (2.0, 2.0, 2.0), "batch_size": 2, "timed_steps": 6}
    return {"roi": 96, "feature_size": 48, "spacing": (1.5, 1.5, 2.0), "batch_size": 2, "timed_steps": 3}


def _deterministic_transforms(options: dict, keyed: bool) -> list:
    """Load, RAS, resample, CT window, foreground crop, pad to the ROI: MONAI's array or dictionary transforms."""
    roi, spacing = (options["roi"],) * 3, options["spacing"]
    if keyed:
        return [LoadImaged("image", ensure_channel_first=True, image_only=True), Orientationd("image", axcodes="RAS"),
                *([Spacingd("image", pixdim=spacing, mode="bilinear")] if spacing else []),
                ScaleIntensityRanged("image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
                CropForegroundd("image", source_key="image"), SpatialPadd("image", spatial_size=roi)]
    return [LoadImage(ensure_channel_first=True, image_only=True), Orientation(axcodes="RAS"),
            *([Spacing(pixdim=spacing, mode="bilinear")] if spacing else []),
            ScaleIntensityRange(a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True), CropForeground(), SpatialPad(spatial_size=roi)]


def _timed_reference_steps(next_crop: Callable[[np.random.Generator], torch.Tensor], options: dict) -> list[tuple[float, float]]:
    """The research-style step (fp32, MONAI's plain window attention) on crops from ``next_crop``:
    (step seconds, data seconds) of each step after one warm-up step."""
    torch.manual_seed(0)
    model = SSLModel(1, options["feature_size"], 512, decoder="upsample", fused_attention=False)
    steps = options["timed_steps"] + 1
    optimizer, scheduler = build_optimizer(model, 4e-4, 0.1, 1, steps)
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    batch = options["batch_size"]
    timings = []
    for _ in range(steps):
        started = time.perf_counter()
        crops = torch.stack([next_crop(rng) for _ in range(batch)]).float()
        data_ready = time.perf_counter()
        targets, rotations = rotate_views(torch.cat([crops, crops]), generator)
        inputs, _ = inner_cutout(targets, generator, CutoutSettings())
        output = model(inputs)
        losses = pretext_losses(output.rotation_logits, rotations, (output.projection[:batch], output.projection[batch:]),
                                output.reconstruction, targets, LossWeights(1.0, 1.0, 1.0))
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        timings.append((time.perf_counter() - started, data_ready - started))
    return timings[1:]


def reference_steps(files: list[Path], options: dict) -> list[tuple[float, float]]:
    """What the research code does by default: every sampled volume decoded and preprocessed on every step."""
    load = Compose([*_deterministic_transforms(options, keyed=False), RandSpatialCrop(roi_size=(options["roi"],) * 3, random_size=False)])
    load.set_random_state(seed=0)
    return _timed_reference_steps(lambda rng: torch.as_tensor(load(str(files[rng.integers(len(files))]))), options)


def cached_reference_steps(files: list[Path], options: dict) -> tuple[float, list[tuple[float, float]]]:
    """What a careful user does: MONAI ``CacheDataset`` keeps every preprocessed volume in memory (built with a
    worker per core) and only the random crop runs per step. Returns (cache build seconds, step timings)."""
    transform = Compose([*_deterministic_transforms(options, keyed=True), RandSpatialCropd("image", roi_size=(options["roi"],) * 3, random_size=False)])
    transform.set_random_state(seed=0)
    started = time.perf_counter()
    dataset = CacheDataset([{"image": str(f)} for f in files], transform, cache_rate=1.0, num_workers=len(os.sched_getaffinity(0)), progress=False)
    build_s = time.perf_counter() - started
    return build_s, _timed_reference_steps(lambda rng: torch.as_tensor(dataset[int(rng.integers(len(files)))]["image"]), options)


def our_steps(folder: Path, work: Path, options: dict) -> list[tuple[float, float]]:
    """(step seconds, data-wait seconds) of each step after the first, from the run's events."""
    config = PretrainConfig(
        data=[str(folder)], out=str(work / "run"), events=str(work / "events.jsonl"), cache_dir=str(work / "cache"),
        spacing=options["spacing"], roi=options["roi"], feature_size=options["feature_size"], batch_size=options["batch_size"],
        steps=options["timed_steps"] + 1, decoder="upsample", device="cpu", checkpoint_every=1000,
    )
    run_pretraining(config)
    progress = [e for e in read_events(work / "events.jsonl") if e["event"] == "progress"]
    return [(e["step_s"], e["data_wait_s"]) for e in progress[1:]]


def copy_ct_files(folder: Path, names: tuple[str, ...] = FILES) -> list[Path]:
    """The workload's real CT files (DICOM series as folders), copied into ``folder`` (created)."""
    folder.mkdir(parents=True)
    return [Path(shutil.copytree(CT_DIR / name, folder / name) if (CT_DIR / name).is_dir() else shutil.copy(CT_DIR / name, folder / name))
            for name in names]


def run(quick: bool, real_shaped: bool = False) -> dict:
    """Step times of ours, the decode-every-step reference and the CacheDataset reference, on the small real CTs
    resampled to 1.5 x 1.5 x 2 mm, or (``real_shaped``) on the full-resolution CTs at their native spacing."""
    options = settings(quick, real_shaped)
    names = REAL_SHAPED_FILES if real_shaped else FILES
    with tempfile.TemporaryDirectory(prefix="swinssl-pretrain-") as work:
        work = Path(work)
        folder = work / "data"
        files = copy_ct_files(folder, names)
        reference = reference_steps(files, options)  # first: run_pretraining switches on deterministic kernels
        cache_build_s, cached = cached_reference_steps(files, options)
        ours = our_steps(folder, work, options)
    reference_s = statistics.median(s for s, _ in reference)
    cached_s = statistics.median(s for s, _ in cached)
    ours_s = statistics.median(s for s, _ in ours)
    return {
        "settings": {**options, "spacing": list(options["spacing"]) if options["spacing"] else "native", "files": list(names), "views_per_step": 2 * options["batch_size"]},
        "reference_step_s": reference_s,
        "reference_data_fraction": sum(d for _, d in reference) / sum(s for s, _ in reference),
        "ours_step_s": ours_s,
        "reference_steps_per_s": 1 / reference_s,
        "ours_steps_per_s": 1 / ours_s,
        "pretrain_speedup": reference_s / ours_s,
        "cached_reference_step_s": cached_s,
        "cached_reference_build_s": cache_build_s,
        "pretrain_speedup_vs_cached": cached_s / ours_s,
        "data_wait_fraction": sum(d for _, d in ours) / sum(s for s, _ in ours),
    }

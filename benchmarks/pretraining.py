"""Workload 3: pretraining throughput, ours vs a loop shaped like the research code.

The reference decodes, reorients, resamples, scales and crops each sampled volume with MONAI
transforms on every step, in fp32, with MONAI's plain window attention. Ours is
``run_pretraining``: volumes preprocessed once into a memory-mapped cache, batches prefetched in
a thread, fused window attention. Model, batch, ROI, views, losses and optimiser are the same;
both run their steps on the same three real CT files.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, CropForeground, LoadImage, Orientation, RandSpatialCrop, ScaleIntensityRange, Spacing, SpatialPad

from benchmarks.common import CT_DIR
from swinssl.events import read_events
from swinssl.ssl.augment import CutoutSettings, inner_cutout, rotate_views
from swinssl.ssl.losses import LossWeights, pretext_losses
from swinssl.ssl.model import SSLModel
from swinssl.training.config import PretrainConfig
from swinssl.training.pretrain import run_pretraining
from swinssl.training.schedule import build_optimizer

FILES = ("abdomen_ct_3mm.nii.gz", "abdomen_ct_small_3mm.nii.gz", "chest_ct_lung1.nrrd")


def settings(quick: bool) -> dict:
    if quick:
        return {"roi": 32, "feature_size": 12, "spacing": (2.0, 2.0, 2.0), "batch_size": 2, "timed_steps": 2}
    return {"roi": 96, "feature_size": 48, "spacing": (1.5, 1.5, 2.0), "batch_size": 2, "timed_steps": 3}


def reference_steps(files: list[Path], options: dict) -> list[tuple[float, float]]:
    """(step seconds, data seconds) of each step after one warm-up step."""
    roi = options["roi"]
    load = Compose([
        LoadImage(ensure_channel_first=True, image_only=True),
        Orientation(axcodes="RAS"),
        Spacing(pixdim=options["spacing"], mode="bilinear"),
        ScaleIntensityRange(a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
        CropForeground(),
        SpatialPad(spatial_size=(roi,) * 3),
        RandSpatialCrop(roi_size=(roi,) * 3, random_size=False),
    ])
    load.set_random_state(seed=0)
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
        crops = torch.stack([torch.as_tensor(load(str(files[rng.integers(len(files))]))) for _ in range(batch)]).float()
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


def copy_ct_files(folder: Path) -> list[Path]:
    """The workload's real CT files, copied into ``folder`` (created)."""
    folder.mkdir(parents=True)
    return [Path(shutil.copy(CT_DIR / name, folder / name)) for name in FILES]


def run(quick: bool) -> dict:
    options = settings(quick)
    with tempfile.TemporaryDirectory(prefix="swinssl-pretrain-") as work:
        work = Path(work)
        folder = work / "data"
        files = copy_ct_files(folder)
        reference = reference_steps(files, options)  # first: run_pretraining switches on deterministic kernels
        ours = our_steps(folder, work, options)
    reference_s = statistics.median(s for s, _ in reference)
    ours_s = statistics.median(s for s, _ in ours)
    return {
        "settings": {**options, "spacing": list(options["spacing"]), "files": list(FILES), "views_per_step": 2 * options["batch_size"]},
        "reference_step_s": reference_s,
        "reference_data_fraction": sum(d for _, d in reference) / sum(s for s, _ in reference),
        "ours_step_s": ours_s,
        "reference_steps_per_s": 1 / reference_s,
        "ours_steps_per_s": 1 / ours_s,
        "pretrain_speedup": reference_s / ours_s,
        "data_wait_fraction": sum(d for _, d in ours) / sum(s for s, _ in ours),
    }

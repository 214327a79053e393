"""Validation during fine-tuning: sliding-window labels over the annotated region of each validation case
(its labelled bounding box grown by half a window, where Dice is decided), per-class Dice, and progress
while it runs, so that validation neither dominates a short run nor leaves the user without news."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from swinssl.finetune.config import FinetuneConfig
from swinssl.finetune.dataset import PreparedCase
from swinssl.inference.sliding_window import sliding_window_labels
from swinssl.labels.table import LabelTable
from swinssl.training.distributed import Runtime, gather_objects

ValidationProgress = Callable[[int, int, int, int], None]  # (case number, cases on all ranks, windows done, windows of that case)


def validation_region(label: np.ndarray, present: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    """The bounding box of the annotated foreground of ``label`` (X, Y, Z), grown by ``margin`` voxels on each
    side and clipped to the volume; the whole volume when nothing annotated is labelled."""
    annotated = present[label]  # True where the voxel's class is annotated in this case
    foreground = annotated & (label > 0)
    if not foreground.any():
        return tuple(slice(0, size) for size in label.shape)
    box = []
    for axis, size in enumerate(label.shape):
        others = tuple(a for a in range(label.ndim) if a != axis)
        indices = np.flatnonzero(foreground.any(axis=others))
        box.append(slice(max(0, int(indices[0]) - margin), min(size, int(indices[-1]) + 1 + margin)))
    return tuple(box)


def dice_scores(predicted: np.ndarray, reference: np.ndarray, present: np.ndarray, table: LabelTable) -> dict[str, float]:
    """Dice per annotated class; classes absent from both maps are left out (undefined)."""
    scores = {}
    for label in table.labels:
        if not present[label.value]:
            continue
        a, b = predicted == label.value, reference == label.value
        total = int(a.sum()) + int(b.sum())
        if total:
            scores[label.name] = 2.0 * int((a & b).sum()) / total
    return scores


def validate(network: torch.nn.Module, cases: list[PreparedCase], table: LabelTable, config: FinetuneConfig, runtime: Runtime,
             progress: ValidationProgress | None = None, value_map: np.ndarray | None = None) -> dict[str, float]:
    """Mean Dice per class over the validation cases, each segmented (sliding window, as at inference) in its
    :func:`validation_region` with a margin of half a window: false positives farther from the annotated
    organs are not counted (a model-selection score, not a benchmark). Under DDP each rank segments every
    world_size-th case and all ranks return the same means. ``network`` is the bare model, not its DDP wrapper.
    ``value_map`` (network output value -> ``table`` value) scores a network with other outputs (a parent model)."""
    was_training = network.training
    network.eval()
    scores: list[dict[str, float]] = []
    for index in range(runtime.rank, len(cases), runtime.world_size):
        case = cases[index]
        region = validation_region(case.label, case.present, config.roi // 2)
        image = torch.from_numpy(np.asarray(case.image[(slice(None), *region)], dtype=np.float32))
        report = None if progress is None else (lambda done, total, _skipped, number=index + 1: progress(number, len(cases), done, total))
        outputs = table.num_classes if value_map is None else len(value_map)
        predicted = sliding_window_labels(image, network, config.roi, outputs, config.overlap, device=runtime.device,
                                          channels_last=False, progress=report).numpy()  # the training weights keep their layout
        predicted = predicted if value_map is None else value_map[predicted]
        scores.append(dice_scores(predicted, case.label[region], case.present, table))
    network.train(was_training)
    per_class: dict[str, list[float]] = {}
    for case_scores in gather_objects(scores, runtime):
        for name, score in case_scores.items():
            per_class.setdefault(name, []).append(score)
    return {name: float(np.mean(values)) for name, values in per_class.items()}

"""Positive/negative ROI crops with flips, 90-degree rotations and intensity shifts.

Like pretraining, a batch depends only on (seed, step, rank), so resume is exact. Probabilities
follow MONAI's Swin UNETR BTCV tutorial: half the crops centred on a labelled voxel, flips p=0.1
per axis, an axial 90-degree rotation p=0.1, an intensity shift of up to +-0.1 with p=0.5.

Positive crops: ``posneg`` (default, MONAI's ``RandCropByPosNegLabeld`` as in the tutorial) centres them on
a uniformly drawn labelled voxel, so large organs dominate; ``classes`` (like ``RandCropByLabelClassesd``
with equal ratios) first draws one of the classes present in the case, then one of its voxels, so small
structures are seen as often as large ones.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from swinssl.finetune.dataset import PreparedCase
from swinssl.training.sampler import step_seed


class SegmentationBatch(NamedTuple):
    images: torch.Tensor  # (B, C, R, R, R) float32
    labels: torch.Tensor  # (B, R, R, R) int64
    present: torch.Tensor  # (B, K + 1) bool


CROP_SAMPLING = ("posneg", "classes")


class LabelledCropSampler:
    def __init__(self, cases: list[PreparedCase], roi: int, batch_size: int, seed: int, rank: int = 0, positive_fraction: float = 0.5,
                 sampling: str = "posneg") -> None:
        if sampling not in CROP_SAMPLING:
            raise ValueError(f"unknown crop sampling {sampling!r}; expected one of {CROP_SAMPLING}")
        self.cases = cases
        self.roi = roi
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.positive_fraction = positive_fraction
        self.sampling = sampling
        self.foreground = [np.argwhere(case.label > 0) for case in cases]  # (N, 3) voxel indices per case
        self.values = [case.label[tuple(points.T)] for case, points in zip(cases, self.foreground)]  # their classes

    def _centre(self, rng: np.random.Generator, index: int) -> np.ndarray:
        points = self.foreground[index]
        if self.sampling == "classes":
            present = np.unique(self.values[index])
            points = points[self.values[index] == present[rng.integers(len(present))]]
        return points[rng.integers(len(points))]

    def _start(self, rng: np.random.Generator, index: int) -> list[int]:
        shape = self.cases[index].label.shape
        if rng.random() < self.positive_fraction and len(self.foreground[index]):
            centre = self._centre(rng, index)
            return [int(np.clip(c - self.roi // 2, 0, n - self.roi)) for c, n in zip(centre, shape)]
        return [int(rng.integers(0, n - self.roi + 1)) for n in shape]

    def batch(self, step: int) -> SegmentationBatch:
        rng = np.random.default_rng(step_seed(self.seed, step, self.rank))
        images, labels, present = [], [], []
        for _ in range(self.batch_size):
            index = int(rng.integers(len(self.cases)))
            case = self.cases[index]
            box = tuple(slice(s, s + self.roi) for s in self._start(rng, index))
            image = np.asarray(case.image[(slice(None), *box)], dtype=np.float32)
            label = np.asarray(case.label[box], dtype=np.int64)
            for axis in range(3):
                if rng.random() < 0.1:
                    image, label = np.flip(image, axis + 1), np.flip(label, axis)
            if rng.random() < 0.1:
                turns = int(rng.integers(1, 4))
                image, label = np.rot90(image, turns, axes=(1, 2)), np.rot90(label, turns, axes=(0, 1))
            if rng.random() < 0.5:
                image = image + rng.uniform(-0.1, 0.1)
            images.append(np.ascontiguousarray(image))
            labels.append(np.ascontiguousarray(label))
            present.append(case.present)
        return SegmentationBatch(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels)), torch.from_numpy(np.stack(present)))

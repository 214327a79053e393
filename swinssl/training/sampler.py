"""Random ROI crops from cached volumes, and the two augmented views of each crop.

Every step's randomness comes from its own generator seeded by (seed, step, rank), so a batch
depends only on those three numbers: resuming at step s draws exactly the batches a straight
run would have drawn, with no sampler state to carry.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, NamedTuple, TypeVar

import numpy as np
import torch

from swinssl.preprocessing.cache import PreparedVolume
from swinssl.ssl.augment import CutoutSettings, apply_cutout, rotate_views

T = TypeVar("T")


class PretextBatch(NamedTuple):
    """Two views per crop, stacked as [view 1 of every crop; view 2 of every crop].

    inputs: (2B, C, R, R, R) rotated and cut out; targets: (2B, C, R, R, R) rotated, uncut;
    rotations: (2B,) int64 rotation classes; modalities: (2B,) int64 index into the sampler's
    ``modalities`` (all 0 for untagged data); masks: (2B, 1, R, R, R) bool, True on cut-out voxels.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    rotations: torch.Tensor
    modalities: torch.Tensor
    masks: torch.Tensor


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


class CropSampler:
    """Draws random volumes and uniformly random cubic ROI crops inside them.

    With one modality, volumes are drawn uniformly. With several (volumes tagged by
    ``PreparedVolume.modality``), crop b of step s on rank r is the global crop g = r * B + b of the
    step and comes from modality (s + g) mod M, a volume drawn uniformly within it: every global batch
    of at least M crops (over all ranks, at any per-rank batch size) holds each modality, and with
    one crop per rank the ranks alternate the modalities.
    """

    def __init__(self, volumes: list[PreparedVolume], roi: int, batch_size: int, seed: int, rank: int = 0) -> None:
        if not volumes:
            raise ValueError("no volumes to sample from")
        self.modalities = sorted({v.modality for v in volumes})
        self.groups = [[v for v in volumes if v.modality == m] for m in self.modalities]
        self.roi = roi
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank

    def crops(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, R, R, R) float32 crops for this step and their (B,) int64 modality indices."""
        rng = np.random.default_rng(step_seed(self.seed, step, self.rank))
        crops, modalities = [], []
        for b in range(self.batch_size):
            modality = (step + self.rank * self.batch_size + b) % len(self.groups)
            group = self.groups[modality]
            volume = group[int(rng.integers(len(group)))].array
            starts = [int(rng.integers(0, n - self.roi + 1)) for n in volume.shape[1:]]
            box = tuple(slice(s, s + self.roi) for s in starts)
            crops.append(np.asarray(volume[(slice(None), *box)], dtype=np.float32))
            modalities.append(modality)
        return torch.from_numpy(np.stack(crops)), torch.tensor(modalities, dtype=torch.int64)

    def batch(self, step: int, cutout: CutoutSettings, rotate: bool = True) -> PretextBatch:
        """Crops, then two independently rotated (unless ``rotate`` is False: class 0) and cut-out views of each."""
        crops, modalities = self.crops(step)
        generator = torch.Generator().manual_seed(step_seed(self.seed, step, self.rank) + 1)
        views = torch.cat([crops, crops])
        targets, rotations = rotate_views(views, generator) if rotate else (views, torch.zeros(len(views), dtype=torch.int64))
        # each view's crops, as the reference's x1 / x2; boxes are pasted only between crops of one modality
        inputs, masks = zip(*(apply_cutout(group, generator, cutout, modalities) for group in targets.chunk(2)))
        return PretextBatch(torch.cat(inputs), targets, rotations, torch.cat([modalities, modalities]), torch.cat(masks))


class Prefetcher(Generic[T]):
    """Builds the items of the next steps in a background thread while the current step trains."""

    def __init__(self, make: Callable[[int], T], depth: int = 2) -> None:
        self._make = make
        self._depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swinssl-data")
        self._pending: dict[int, Future[T]] = {}

    def get(self, step: int) -> T:
        for ahead in range(step, step + self._depth + 1):
            if ahead not in self._pending:
                self._pending[ahead] = self._pool.submit(self._make, ahead)
        for stale in [s for s in self._pending if s < step]:
            self._pending.pop(stale).cancel()
        return self._pending.pop(step).result()

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pool.shutdown(wait=True)

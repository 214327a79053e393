"""Intensity presets: map raw voxel values to 0..1 (MONAI intensity transforms)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRESETS = ("ct", "mr", "pet", "none")
CT_WINDOW = (-1000.0, 1000.0)  # Tang et al. 2022 pretraining: clip -1000..1000 HU, scale to 0..1
# Fine-tuning on CT: -175..250 HU, as the BTCV reference (research-contributions SwinUNETR/BTCV, a_min/a_max),
# MONAI's Swin UNETR BTCV tutorial and the model-zoo swin_unetr_btcv_segmentation bundle use.
FINETUNE_CT_WINDOW = (-175.0, 250.0)


@dataclass(frozen=True)
class IntensitySettings:
    """How to normalise intensities.

    Attributes:
        preset: ``ct`` (clip -1000..1000 HU), ``mr`` (per-volume 0.5-99.5 percentile clip),
            ``pet`` (clip at ``pet_max_suv`` if given, else at the ``pet_percentile`` percentile),
            or ``none`` (values unchanged).
        window: a custom (low, high) clip window; overrides the preset's window when given.
    """

    preset: str = "ct"
    window: tuple[float, float] | None = None
    pet_max_suv: float | None = None
    pet_percentile: float = 99.9

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown intensity preset {self.preset!r}; expected one of {PRESETS}")
        if self.window is not None and not self.window[0] < self.window[1]:
            raise ValueError(f"window low must be below high, got {self.window}")


def normalize_intensity(array: np.ndarray, settings: IntensitySettings) -> np.ndarray:
    """Scales a channel-first float32 array (C, X, Y, Z) to 0..1, channel by channel."""
    array = np.asarray(array, dtype=np.float32)
    if settings.window is not None:
        low, high = settings.window
        return _scale_range(array, low, high)
    if settings.preset == "ct":
        return _scale_range(array, *CT_WINDOW)
    if settings.preset == "mr":
        from monai.transforms import ScaleIntensityRangePercentiles  # here: the faces import this module for its settings only

        transform = ScaleIntensityRangePercentiles(0.5, 99.5, b_min=0.0, b_max=1.0, clip=True, channel_wise=True)
        return np.asarray(transform(array), dtype=np.float32)
    if settings.preset == "pet":
        channels = []
        for channel in array:
            high = settings.pet_max_suv if settings.pet_max_suv is not None else float(np.percentile(channel, settings.pet_percentile))
            channels.append(_scale_range(channel, 0.0, max(high, 1e-6)))
        return np.stack(channels)
    return array


def normalize_channels(array: np.ndarray, settings: IntensitySettings | tuple[IntensitySettings, ...]) -> np.ndarray:
    """(C, X, Y, Z) to 0..1 with one setting for all channels, or one per channel (e.g. CT window, PET SUV)."""
    if isinstance(settings, IntensitySettings):
        return normalize_intensity(array, settings)
    if len(settings) != len(array):
        raise ValueError(f"{len(settings)} channel presets for {len(array)} channel(s)")
    return np.concatenate([normalize_intensity(channel[None], s) for channel, s in zip(array, settings)])


def _scale_range(array: np.ndarray, low: float, high: float) -> np.ndarray:
    from monai.transforms import ScaleIntensityRange  # here: the faces import this module for its settings only

    transform = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
    return np.asarray(transform(array), dtype=np.float32)

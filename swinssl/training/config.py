"""Settings of a pretraining run, saved as ``RUN/config.json`` and inside every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

from swinssl.preprocessing.cache import PrepSettings
from swinssl.preprocessing.intensity import CT_WINDOW, IntensitySettings
from swinssl.training.schedule import default_warmup
from swinssl.training.settings import JsonSettings
from swinssl.ssl.augment import CutoutSettings
from swinssl.ssl.losses import INPAINT_LOSSES, LossWeights


@dataclass(frozen=True)
class PreviewDisplay:
    """How previews are shown and measured. Intensities are the model's 0..1.

    windows: (low, high, name) display windows in 0..1 units; the first is used for every view, the
        others add an axial row each (e.g. the training window beside the soft-tissue one).
    scale, unit: L1 is reported as (0..1 difference) * scale in unit (2000 HU for CT in -1000..1000).
    """

    windows: tuple[tuple[float, float, str], ...] = ((0.0, 1.0, "full range"),)
    scale: float = 1.0
    unit: str = "(0..1 intensity)"


# Fields that may change when a run is resumed; everything else must stay as it was.
RUN_CONTROL_FIELDS = ("steps", "checkpoint_every", "preview_every", "log_every", "device", "stop_at", "stop_file", "events", "cache_dir", "cache_workers", "amp")


@dataclass
class PretrainConfig(JsonSettings):
    """All settings of a pretraining run (defaults follow Tang et al. 2022 where the paper gives one)."""

    data: list[str] = field(default_factory=list)
    modality: list[str] | None = None  # one per data entry (ct, mr, pet): tags batches, picks each entry's preset
    out: str = "run"
    events: str | None = None
    cache_dir: str | None = None
    cache_workers: int | None = None  # processes preparing volumes per rank; None: cores / local ranks, at most 8
    # preprocessing
    preset: str = "ct"
    window: tuple[float, float] | None = None
    pet_max_suv: float | None = None
    pet_percentile: float = 99.9
    spacing: tuple[float, float, float] | None = None
    orient_ras: bool = True
    crop_foreground: bool = True
    # model
    in_channels: int = 1
    channel_presets: list[str] | None = None  # one preset per channel (e.g. ct pet); sets in_channels
    roi: int = 96
    feature_size: int = 48
    projection_dim: int = 512
    decoder: str = "deconv"  # ours; the reference heads and SwinUNETR's full decoder (swinunetr) are options (README)
    inpaint_loss: str = "all"  # L1 over all voxels (the published setting) or "masked": the cut-out voxels only (DAE mask_only, SimMIM)
    gradient_checkpointing: bool = False
    init: str | None = None  # start from these weights: a pretraining model (.safetensors/.pt of SSLModel) or an encoder
    patch_merging: str | None = None  # legacy | v1.5; None: decided from --init (swinssl.weights.choose_patch_merging), then recorded
    swinfuse: bool = False  # SwinFUSE: domain-invariance module + KDE/JSD density matching
    jsd_weight: float = 0.1
    kde_sigma: float | None = None  # None: median pairwise feature distance per batch
    # optimisation
    batch_size: int = 2
    steps: int = 1000
    lr: float = 4e-4
    weight_decay: float = 0.1
    warmup_steps: int | None = None
    grad_clip: float = 1.0
    temperature: float = 0.5
    loss_rotation: float = 1.0
    rotate: bool = True  # rotate the views (the rotation task); False needs loss_rotation 0
    loss_contrast: float = 1.0
    loss_inpaint: float = 1.0
    cutout_max_fraction: float = 0.3
    cutout_style: str = "reference"  # the reference aug_rand (noise pass + paste pass); "exact": ours (see README)
    amp: bool = True
    deterministic: bool = False
    seed: int = 0
    device: str = "auto"
    # run control
    checkpoint_every: int = 100
    preview_every: int = 0
    log_every: int = 1
    stop_at: int | None = None
    stop_file: str | None = None  # stop as on SIGTERM once this file exists (a GUI's signal-free stop channel)

    def preview_display(self) -> PreviewDisplay:
        """What the preview PNG shows and in which unit it measures: for CT, the abdominal soft-tissue window
        (-160..240 HU, where organs and their borders are visible, and every error looks 5 times larger) with a
        row in the training window, and L1 in HU; else the whole 0..1 range."""
        if self.preset != "ct" or (self.channel_presets and self.channel_presets[0] != "ct"):
            return PreviewDisplay()
        low, high = self.window or CT_WINDOW
        training = (0.0, 1.0, f"training window {low:g}..{high:g} HU")
        if low <= -160 and high >= 240:
            soft = ((-160 - low) / (high - low), (240 - low) / (high - low), "soft tissue -160..240 HU")
            return PreviewDisplay((soft, training), high - low, "HU")
        return PreviewDisplay((training,), high - low, "HU")

    def __post_init__(self) -> None:
        if self.roi % 32:
            raise ValueError(f"--roi must be divisible by 32 (Swin UNETR downsamples 5 times), got {self.roi}")
        if not self.rotate and self.loss_rotation > 0:
            raise ValueError("--no-rotation turns the rotation task off: give --loss-weights 0 CONTRAST INPAINT")
        if self.decoder in ("vae", "swinunetr") and self.roi < 64:
            raise ValueError(f"--decoder {self.decoder} needs --roi 64 or more (its first instance norm acts on the {self.roi // 32}^3 "
                             "last-stage grid, which must hold more than one voxel); use --decoder deconv for smaller crops")
        if self.inpaint_loss not in INPAINT_LOSSES:
            raise ValueError(f"--inpaint-loss must be one of {', '.join(INPAINT_LOSSES)}, got {self.inpaint_loss!r}")
        if self.feature_size % 12 or not 12 <= self.feature_size:
            raise ValueError(f"--feature-size must be a multiple of 12 (12..48 typical), got {self.feature_size}")
        if self.channel_presets is not None:
            if self.modality is not None:
                raise ValueError("--channel-presets (multi-channel volumes) and --modality (tagged folders) cannot be combined")
            self.in_channels = len(self.channel_presets)
        if self.in_channels < 1 or self.batch_size < 1 or self.steps < 1:
            raise ValueError("in_channels, batch_size and steps must be at least 1")
        if self.modality is not None:
            if len(self.modality) != len(self.data):
                raise ValueError(f"--modality needs one value per --data entry: {len(self.data)} data, {len(self.modality)} modalities")
            unknown = sorted(set(self.modality) - {"ct", "mr", "pet"})
            if unknown:
                raise ValueError(f"unknown modality {', '.join(unknown)}; expected ct, mr or pet")
        if self.window is not None:
            self.window = tuple(self.window)
        if self.spacing is not None:
            self.spacing = tuple(self.spacing)

    @property
    def warmup(self) -> int:
        return default_warmup(self.steps, self.warmup_steps)

    def prep_settings(self, modality: str | None = None) -> PrepSettings:
        """Preprocessing of ``modality``'s volumes (its own preset), or of all volumes when untagged."""
        if self.channel_presets is not None:
            intensity = tuple(self._intensity(preset) for preset in self.channel_presets)
        elif modality is None:
            intensity = self._intensity(self.preset)
        else:
            intensity = self._intensity(modality)
        return PrepSettings(intensity, self.spacing, self.orient_ras, self.crop_foreground, (self.roi,) * 3, self.in_channels)

    def _intensity(self, preset: str) -> IntensitySettings:
        """``preset``'s settings; --window applies to the --preset channel only."""
        window = self.window if preset == self.preset else None
        return IntensitySettings(preset, window, self.pet_max_suv, self.pet_percentile)

    def data_groups(self) -> list[tuple[str, list[str]]]:
        """(modality, data entries) in first-seen order; one untagged group ("") without --modality."""
        if self.modality is None:
            return [("", list(self.data))]
        groups: dict[str, list[str]] = {}
        for root, modality in zip(self.data, self.modality):
            groups.setdefault(modality, []).append(root)
        return list(groups.items())

    def loss_weights(self) -> LossWeights:
        return LossWeights(self.loss_rotation, self.loss_contrast, self.loss_inpaint)

    def cutout(self) -> CutoutSettings:
        return CutoutSettings(max_fraction=self.cutout_max_fraction, style=self.cutout_style)

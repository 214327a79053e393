"""Settings of a fine-tuning run, saved as ``MODEL_DIR/training/config.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

from swinssl.package import InputChannel
from swinssl.preprocessing.intensity import FINETUNE_CT_WINDOW, IntensitySettings
from swinssl.training.schedule import default_warmup
from swinssl.training.settings import JsonSettings

FINETUNE_RUN_CONTROL = ("steps", "checkpoint_every", "val_every", "device", "stop_at", "stop_file", "events", "amp")


@dataclass
class FinetuneConfig(JsonSettings):
    """Defaults follow MONAI's Swin UNETR BTCV tutorial where it gives one; CT without ``window`` gets the
    tutorial's -175..250 HU (:data:`FINETUNE_CT_WINDOW`), recorded explicitly in the saved config."""

    out: str = "model"
    data: list[str] = field(default_factory=list)
    datalists: list[str] = field(default_factory=list)
    scenes: list[str] = field(default_factory=list)
    classes: list[str] | None = None
    name: str | None = None
    events: str | None = None
    modality: str = "CT"
    preset: str = "ct"
    window: tuple[float, float] | None = None
    channel_presets: list[str] | None = None  # multi-channel images: one preset per channel (e.g. ct pet)
    spacing: tuple[float, float, float] = (1.5, 1.5, 2.0)
    roi: int = 96
    feature_size: int = 48
    init: str = "random"
    patch_merging: str | None = None  # legacy | v1.5; None: decided from --init (swinssl.weights.choose_patch_merging), then recorded
    encoder_only: bool = False  # load only the encoder of --init (ablation); default: every tensor that fits, decoder included
    batch_size: int = 1
    crop_sampling: str = "posneg"  # positive crops: posneg (tutorial) or classes (each present class equally often)
    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_steps: int | None = None
    grad_clip: float = 1.0
    amp: bool = True
    deterministic: bool = False
    seed: int = 0
    device: str = "auto"
    overlap: float = 0.5
    val_every: int = 100
    val_cases: int | None = None
    train_cases: int | None = None
    checkpoint_every: int = 100
    stop_at: int | None = None
    stop_file: str | None = None  # stop as on SIGTERM once this file exists (a GUI's signal-free stop channel)

    def __post_init__(self) -> None:
        if self.roi % 32 or self.roi < 64:
            raise ValueError(f"--roi must be a multiple of 32 and at least 64 for SwinUNETR, got {self.roi}")
        if self.feature_size % 12:
            raise ValueError(f"--feature-size must be a multiple of 12, got {self.feature_size}")
        if not (self.data or self.datalists or self.scenes):
            raise ValueError("give labelled data: --data, --datalist and/or --scenes")
        self.spacing = tuple(self.spacing)
        if self.window is None and self.preset == "ct":
            self.window = FINETUNE_CT_WINDOW
        if self.window is not None:
            self.window = tuple(self.window)

    @property
    def warmup(self) -> int:
        return default_warmup(self.steps, self.warmup_steps)

    def input_channels(self) -> list[InputChannel]:
        """The package's channels: one (--modality, --preset), or one per --channel-presets entry."""
        if not self.channel_presets:
            return [InputChannel(self.modality, self.preset, self.window)]
        return [InputChannel(preset.upper(), preset, self.window if preset == self.preset else FINETUNE_CT_WINDOW if preset == "ct" else None)
                for preset in self.channel_presets]

    def intensity(self) -> tuple[IntensitySettings, ...]:
        return tuple(channel.intensity() for channel in self.input_channels())

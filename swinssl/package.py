"""Model packages: one folder with ``model.json`` and ``model.safetensors`` that Segment can list and run.

``model.json`` (format ``swinssl-model/1``)::

    {"format": "swinssl-model/1", "name": "abdomen-organs", "version": "1.0", "description": "...",
     "labels": [{"value": 1, "name": "liver", "color": [r, g, b], "terminology": {...}}, ...],
     "channels": [{"modality": "CT", "preset": "ct", "window": null}],
     "spacing": [1.5, 1.5, 2.0], "roi": 96, "feature_size": 48,
     "patch_merging": "v1.5", "legacy_patch_merging": false, "monai_version": "1.5.0",
     "swinssl_version": "0.1.0", "training": {...}, "metrics": {...},
     "trained_on": {"region": "abdomen", "source": "...", "spacing_mm": [1.5, 2.0], "known_misses": ["..."]},
     "backend": "auto"}

``trained_on`` (optional; older packages have none) says what the model has seen, so a face can show it next
to the model choice and :mod:`swinssl.inference.input_fit` can warn about inputs unlike it. ``metrics`` may hold
``confidence`` {segment: mean confidence on the validation cases}, the reference of the plausibility summary.

``backend`` (optional, default ``auto``) is the inference engine the model's author recommends for it: ``torch`` for a
network OpenVINO converts badly, say. ``segment --backend`` and ``$SWINSSL_BACKEND`` win over it.

``patch_merging`` is the order of MONAI's 3-D patch-merging slots the weights were trained with (``legacy``:
MONAI <= 1.4; see :mod:`swinssl.weights`); ``legacy_patch_merging`` repeats it for earlier swinssl versions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swinssl import __version__
from swinssl.io.atomic import atomic_write
from swinssl.labels.table import LabelTable

BACKENDS = ("auto", "torch", "openvino")  # inference engines: auto = OpenVINO on the CPU when installed, else PyTorch

PACKAGE_FORMAT = "swinssl-model/1"
MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class InputChannel:
    """One model input: its modality (shown in Slicer) and how its intensities are normalised."""

    modality: str = "CT"
    preset: str = "ct"
    window: tuple[float, float] | None = None
    pet_max_suv: float | None = None

    def intensity(self):
        """The channel's :class:`~swinssl.preprocessing.intensity.IntensitySettings`."""
        from swinssl.preprocessing.intensity import IntensitySettings

        return IntensitySettings(self.preset, tuple(self.window) if self.window else None, self.pet_max_suv)


@dataclass(frozen=True)
class TrainedOn:
    """What a model was trained on, beyond its channels' modalities: body ``region`` (e.g. "abdomen"; "" when not
    recorded), the training data's ``source``, the input voxel spacings it saw (``spacing_mm``: finest, coarsest;
    None: the package spacing) and what it is known to miss, in words that name the segment (an empty segment named in
    a known miss is reported as that miss, not as a surprise)."""

    region: str = ""
    source: str = ""
    spacing_mm: tuple[float, float] | None = None
    known_misses: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, meta: dict) -> TrainedOn:
        spacing = meta.get("spacing_mm")
        return cls(str(meta.get("region", "")), str(meta.get("source", "")), (float(spacing[0]), float(spacing[1])) if spacing else None,
                   tuple(str(miss) for miss in meta.get("known_misses", ())))

    def to_json(self) -> dict:
        return {"region": self.region, "source": self.source, "spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
                "known_misses": list(self.known_misses)}


@dataclass
class ModelPackage:
    name: str
    labels: LabelTable
    channels: list[InputChannel]
    spacing: tuple[float, float, float]
    roi: int
    feature_size: int
    version: str = "1.0"
    description: str = ""
    patch_merging: str = "v1.5"
    monai_version: str | None = None  # the MONAI that trained or converted the weights; set when they are saved
    swinssl_version: str = __version__
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    trained_on: TrainedOn = field(default_factory=TrainedOn)
    backend: str = "auto"  # one of BACKENDS: the engine recommended for this model
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"model backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.roi % 32 or self.roi < 64:
            raise ValueError(f"model ROI must be a multiple of 32 and at least 64 (SwinUNETR's instance-normalised bottleneck needs > 1 voxel), got {self.roi}")

    def to_json(self) -> dict:
        return {
            "format": PACKAGE_FORMAT,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "labels": self.labels.to_list(),
            "channels": [asdict(c) for c in self.channels],
            "spacing": list(self.spacing),
            "roi": self.roi,
            "feature_size": self.feature_size,
            "patch_merging": self.patch_merging,
            "legacy_patch_merging": self.patch_merging == "legacy",
            "monai_version": self.monai_version,
            "swinssl_version": self.swinssl_version,
            "training": self.training,
            "metrics": self.metrics,
            "trained_on": self.trained_on.to_json(),
            "backend": self.backend,
        }

    def kind(self) -> str:
        """What the model takes, in words: "abdomen CT", "CT + PET" (region when recorded)."""
        modalities = " + ".join(channel.modality for channel in self.channels)
        return f"{self.trained_on.region} {modalities}" if self.trained_on.region else modalities

    def describe_training(self) -> str:
        """One line for the faces, next to the model choice: what it was trained on and what it is known to miss."""
        spacing = self.trained_on.spacing_mm or (min(self.spacing), max(self.spacing))
        voxels = f"{spacing[0]:g} mm" if spacing[0] == spacing[1] else f"{spacing[0]:g}-{spacing[1]:g} mm"
        text = f"Trained on {self.kind()} ({voxels} voxels)" + (f": {self.trained_on.source}" if self.trained_on.source else "")
        if self.trained_on.known_misses:
            text += ". Known misses: " + "; ".join(self.trained_on.known_misses)
        return text + "."

    def build_network(self):
        """SwinUNETR with this package's architecture, weights loaded strictly, in eval mode."""
        from swinssl.io.weights_file import load_safetensors
        from swinssl.network import build_swin_unetr

        network = build_swin_unetr(len(self.channels), self.labels.num_classes, self.feature_size, self.patch_merging == "legacy")
        if self.path is not None:
            state = load_safetensors(self.path / WEIGHTS)
            missing, unexpected = network.state_dict().keys() - state.keys(), state.keys() - network.state_dict().keys()
            reshaped = [k for k in state.keys() & network.state_dict().keys() if state[k].shape != network.state_dict()[k].shape]
            if missing or unexpected or reshaped:
                raise ValueError(f"{self.path / WEIGHTS}: the weights do not fit the network {MODEL_JSON} describes "
                                 f"({len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} of another shape)")
            network.load_state_dict(state)
        return network.eval()

    def save(self, folder: Path, state_dict: dict) -> Path:
        """Writes ``model.safetensors`` then ``model.json`` into ``folder``, each atomically."""
        from safetensors.torch import save

        from swinssl.weights import provenance

        recorded = provenance(self.patch_merging)
        self.monai_version = self.monai_version or recorded["monai_version"]
        metadata = {"format": PACKAGE_FORMAT, "patch_merging": self.patch_merging, "monai_version": self.monai_version}
        weights = save({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, metadata=metadata)
        atomic_write(folder / WEIGHTS, lambda stream: stream.write(weights))
        self.path = folder
        self.write_metadata()
        return folder

    def write_metadata(self) -> Path:
        """(Re)writes ``model.json`` in :attr:`path`, atomically."""
        return atomic_write(self.path / MODEL_JSON, lambda stream: stream.write(json.dumps(self.to_json(), indent=2).encode()))


def load_package(folder: str | Path) -> ModelPackage:
    """Reads a package folder; raises ValueError naming the file when it is not one."""
    folder = Path(folder)
    meta_path = folder / MODEL_JSON
    if not meta_path.exists() or not (folder / WEIGHTS).exists():
        raise ValueError(f"{folder}: not a model package (needs {MODEL_JSON} and {WEIGHTS})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{meta_path}: invalid JSON ({error})") from error
    if meta.get("format") != PACKAGE_FORMAT:
        raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r}, expected {PACKAGE_FORMAT}")
    missing = [key for key in ("name", "labels", "channels", "spacing", "roi", "feature_size") if key not in meta]
    if missing:
        raise ValueError(f"{meta_path}: missing {', '.join(missing)}")
    return ModelPackage(
        name=meta["name"],
        labels=LabelTable.from_list(meta["labels"]),
        channels=[InputChannel(c["modality"], c["preset"], tuple(c["window"]) if c.get("window") else None, c.get("pet_max_suv")) for c in meta["channels"]],
        spacing=tuple(meta["spacing"]),
        roi=int(meta["roi"]),
        feature_size=int(meta["feature_size"]),
        version=meta.get("version", "1.0"),
        description=meta.get("description", ""),
        patch_merging=meta.get("patch_merging") or ("legacy" if meta.get("legacy_patch_merging") else "v1.5"),
        monai_version=meta.get("monai_version"),
        swinssl_version=meta.get("swinssl_version", "unknown"),
        training=meta.get("training", {}),
        metrics=meta.get("metrics", {}),
        trained_on=TrainedOn.from_json(meta.get("trained_on") or {}),
        backend=meta.get("backend") or "auto",
        path=folder,
    )

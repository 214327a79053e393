"""Reading weights from untrusted files, mapping public key layouts onto MONAI's SwinUNETR, and choosing the
patch-merging order they were trained with.

Layouts (what the public code writes and loads; see the README's "Weights and their sources"):
- ``tang-ssl``: the released Tang et al. ``model_swinvit.pt``: ``state_dict`` with ``module.patch_embed.*``,
  ``module.layers{1-4}.0.blocks.*`` (``mlp.fc1/fc2``), ``module.layers{1-4}.0.downsample.*``, ``module.norm.*``,
  the keys MONAI's ``SwinUNETR.load_from`` reads;
- ``monai-ssl``: MONAI's ~50k-volume SSL weights (``model``): the whole SwinUNETR was pretrained. Encoder keys carry
  an ``encoder.`` prefix with an extra ``.0`` after the stage index, which the tutorial's renaming and MONAI's
  ``filter_swinunetr`` undo (``encoder.mask_token`` and ``encoder.norm.*`` have no counterpart); every other key
  (``encoder1-4``, ``encoder10``, ``decoder1-5``, ``out``) is already SwinUNETR's and is loaded as it is, as
  ``copy_model_state`` does: the decoder always, ``out.*`` (one reconstruction channel) only where its shape fits;
- ``reference-ssl``: a checkpoint of the reference pretraining script (research-contributions
  SwinUNETR/Pretrain ``main.py``): ``state_dict`` of its ``SSLHead`` (``swinViT.*``, ``rotation_head``,
  ``contrastive_head``, ``conv``), with ``module.`` in front of every key when it ran under DDP;
- ``swinunetr``: a full SwinUNETR state dict (``swinViT.``, ``encoder1``...), e.g. the BTCV fine-tuned
  checkpoints, a MONAI bundle's ``models/model.pt``, a model package, our encoder export;
- ``swinssl-pretrain``: a pretraining checkpoint or model of ours (``swinViT.`` + our heads; with ``--decoder swinunetr``
  the reconstruction head is SwinUNETR's decoder under its own names, loaded with the encoder, ``out`` excepted).
Every tensor whose mapped name and shape fit the network is loaded (``--encoder-only``: ``swinViT.*`` only).
A ``module.`` prefix on every key (a DDP-wrapped model's state dict) is removed first.
Files are read with safetensors or ``torch.load(weights_only=True)``: a pickle that would run code is refused.

Patch merging: MONAI 1.5 (PR #8285) changed the order of the eight 2x2x2 slots of its 3-D ``PatchMerging``;
weights trained with MONAI <= 1.4 give their features only with the old (``legacy``) order. The order is
taken, in this priority, from an explicit choice (``--patch-merging``), what the file records (our files, a
package's ``model.json``, a bundle's ``monai_version``), then the layout (see :func:`choose_patch_merging`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from swinssl.io.weights_file import WeightsFileError, load_safetensors, load_torch_file, safetensors_metadata

PATCH_MERGING_ORDERS = ("legacy", "v1.5")
LEGACY_MERGING_LAYOUTS = ("tang-ssl", "monai-ssl", "reference-ssl")
CONTAINER_KEYS = ("state_dict", "model", "network", "net", "model_state_dict")
# SwinUNETR's decoder: the convolutional skip encoders and the up-sampling blocks (not ``out``, the class-specific layer).
DECODER_MODULES = ("encoder1", "encoder2", "encoder3", "encoder4", "encoder10", "decoder5", "decoder4", "decoder3", "decoder2", "decoder1")


def is_decoder_key(key: str) -> bool:
    return key.split(".", 1)[0] in DECODER_MODULES


WeightsError = WeightsFileError  # weights that cannot be read or that load nothing useful; the message names the file


def merging_of_monai_version(version: str) -> str:
    """``legacy`` for MONAI < 1.5, else ``v1.5``."""
    from packaging.version import InvalidVersion, Version

    try:
        return "legacy" if Version(version).release[:2] < (1, 5) else "v1.5"
    except InvalidVersion:
        return "legacy"


def provenance(patch_merging: str) -> dict[str, str]:
    """What every checkpoint, encoder and package we write records about its network."""
    import monai

    return {"patch_merging": patch_merging, "monai_version": monai.__version__}


def _unwrap(data: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(data, dict) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        inner = next((data[k] for k in CONTAINER_KEYS if isinstance(data.get(k), dict)), None)
        if inner is None:
            break
        data = inner
    if not isinstance(data, dict) or not any(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path}: holds no state dict (looked inside {', '.join(CONTAINER_KEYS)})")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def weights_file_of(reference: str | Path) -> Path:
    """The weights file of ``reference``: a file, or a model package, pretraining run (its SwinUNETR-keyed encoder +
    decoder when pretrained with ``--decoder swinunetr``, else its encoder), MONAI bundle or downloaded weights folder."""
    from swinssl.model_download import installed_weights

    path = Path(reference)
    names = ("model.safetensors", "swinunetr.safetensors", "encoder.safetensors", "models/model.pt", "checkpoint.pt")
    for candidate in (path, *(path / name for name in names), installed_weights(path.name, path.parent)):
        if candidate is not None and candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{reference}: no weights file ({', '.join(names)})")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a weights-only torch checkpoint, unwrapped from common containers."""
    return read_weights(path).state


@dataclass(frozen=True)
class WeightsSource:
    """A weights file read once: its tensors (``module.`` prefix removed), key layout, and the patch-merging
    order it records about itself (None when it records nothing) with where that record was found."""

    path: Path
    state: dict[str, torch.Tensor]
    layout: str
    recorded_merging: str | None
    recorded_in: str
    data_parallel: bool


def read_weights(path: str | Path) -> WeightsSource:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        state, container = load_safetensors(path), {"metadata": safetensors_metadata(path)}
    else:
        container = load_torch_file(path)
        state = _unwrap(container, path)
    data_parallel = bool(state) and all(k.startswith("module.") for k in state)
    if data_parallel:
        state = {k.removeprefix("module."): v for k, v in state.items()}
    recorded, where = _recorded_merging(path, container)
    return WeightsSource(path, state, detect_layout(state, path), recorded, where, data_parallel)


def _recorded_merging(path: Path, container: Any) -> tuple[str | None, str]:
    """The order recorded by the file itself, the package or bundle around it, or (None, "")."""
    package_json = path.parent / "model.json"
    if package_json.is_file():
        try:
            meta = json.loads(package_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            meta = {}
        if meta.get("patch_merging") in PATCH_MERGING_ORDERS:
            return meta["patch_merging"], f"{package_json}"
        if "legacy_patch_merging" in meta:
            return ("legacy" if meta["legacy_patch_merging"] else "v1.5"), f"{package_json} (legacy_patch_merging)"
    metadata = path.parent.parent / "configs" / "metadata.json"
    if path.parent.name == "models" and metadata.is_file():
        try:
            version = str(json.loads(metadata.read_text(encoding="utf-8")).get("monai_version", ""))
        except (OSError, json.JSONDecodeError):
            version = ""
        if version and merging_of_monai_version(version) == "legacy":
            return "legacy", f"{metadata} (monai_version {version})"
        return None, ""  # a newer monai_version names the MONAI the bundle supports, not the one that trained its weights
    if not isinstance(container, dict):
        return None, ""
    tags = container.get("metadata") if isinstance(container.get("metadata"), dict) else {}
    config = container.get("config") if isinstance(container.get("config"), dict) else {}
    for record in (container, tags, config):
        if record.get("patch_merging") in PATCH_MERGING_ORDERS:
            return record["patch_merging"], f"{path}"
    extra = container.get("extra") if isinstance(container.get("extra"), dict) else {}
    if "legacy_patch_merging" in extra:
        return ("legacy" if extra["legacy_patch_merging"] else "v1.5"), f"{path} (legacy_patch_merging)"
    if container.get("kind") == "pretrain" or tags.get("format") == "swinssl-encoder":  # packages could be legacy: see model.json
        return "v1.5", f"{path} (a pretraining file of an earlier swinssl, which always pretrained with MONAI >= 1.5)"
    return None, ""


def detect_layout(state: dict[str, torch.Tensor], path: Path | str = "weights") -> str:
    keys = list(state)
    if any(k.startswith(("encoder.layers", "encoder.patch_embed")) for k in keys):
        return "monai-ssl"
    if any(re.match(r"layers[1-4]\.0\.blocks\.", k) for k in keys):
        return "tang-ssl"
    if any(k.startswith("swinViT.") for k in keys):
        if any(k.startswith("conv.") for k in keys) and not any(k.startswith("reconstruction_head.") for k in keys):
            return "reference-ssl"
        return "swinssl-pretrain" if any(k.startswith(("rotation_head.", "contrastive_head.")) for k in keys) else "swinunetr"
    raise WeightsError(f"{path}: unknown weight layout (first keys: {keys[:3]})")


def choose_patch_merging(source: WeightsSource | None, override: str | None = None) -> tuple[str, str]:
    """(order, why) for a network that will take ``source``'s weights (None: random weights)."""
    if override is not None:
        if override not in PATCH_MERGING_ORDERS:
            raise ValueError(f"--patch-merging must be one of {', '.join(PATCH_MERGING_ORDERS)}, got {override!r}")
        return override, "set explicitly (--patch-merging, or compare-init building both arms like the pretrained weights)"
    if source is None:
        return "v1.5", "random weights: this MONAI's order"
    if source.recorded_merging is not None:
        return source.recorded_merging, f"recorded in {source.recorded_in}"
    if source.layout in LEGACY_MERGING_LAYOUTS:
        return "legacy", f"{source.layout} weights were trained with MONAI < 1.5"
    if source.layout == "swinssl-pretrain":
        return "v1.5", "a swinssl pretraining model (swinssl always pretrained with MONAI >= 1.5)"
    return "legacy", ("the file records no MONAI version; every released SwinUNETR checkpoint (BTCV, model zoo) predates "
                      "MONAI 1.5; give --patch-merging v1.5 for weights trained with MONAI >= 1.5")


def _mlp_names(key: str) -> str:
    return key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")


def to_swinunetr_keys(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Renames keys to SwinUNETR's; keys with no SwinUNETR counterpart (SSL heads, final norms) are dropped."""
    mapped = {}
    for key, value in state.items():
        if layout == "tang-ssl":
            if not key.startswith(("patch_embed.", "layers")):
                continue
            key = "swinViT." + _mlp_names(key)
        elif layout == "monai-ssl":
            match = re.match(r"encoder\.(layers[1-4])\.0\.0\.(.*)", key)
            if match:
                key = f"swinViT.{match.group(1)}.0.{match.group(2)}"
            elif key.startswith("encoder.patch_embed."):
                key = "swinViT." + key.removeprefix("encoder.")
            elif key.startswith("encoder."):
                continue  # mask token and final norm
        elif layout in ("swinssl-pretrain", "reference-ssl"):
            if not key.startswith("swinViT.") and not is_decoder_key(key):
                continue
            key = _mlp_names(key)
        mapped[key] = value
    return mapped


@dataclass(frozen=True)
class LoadReport:
    source: str
    layout: str
    matched: int
    missing: int
    unexpected: int
    shape_mismatch: int
    encoder_matched: int
    encoder_total: int
    patch_merging: str
    patch_merging_reason: str
    decoder_matched: int = 0
    decoder_total: int = 0
    output_loaded: bool = False
    encoder_only: bool = False

    def summary(self) -> str:
        decoder = "not loaded (--encoder-only)" if self.encoder_only else f"{self.decoder_matched}/{self.decoder_total}"
        return (f"{self.source} ({self.layout}): {self.matched} tensors loaded, {self.missing} missing, {self.unexpected} unexpected, "
                f"{self.shape_mismatch} of other shape; encoder {self.encoder_matched}/{self.encoder_total}, decoder {decoder}, "
                f"output layer {'loaded' if self.output_loaded else 'new'}; patch merging {self.patch_merging} ({self.patch_merging_reason})")


def load_weights(network: torch.nn.Module, source: WeightsSource | str | Path, patch_merging: tuple[str, str] | None = None,
                 encoder_only: bool = False) -> LoadReport:
    """Loads every tensor of ``source`` whose name and shape match ``network`` (a SwinUNETR built with the
    order ``patch_merging`` = (order, why), by default :func:`choose_patch_merging` of the source), as MONAI's
    ``copy_model_state`` does; with ``encoder_only`` the ``swinViT.*`` tensors only.

    Raises:
        WeightsError: when the encoder (``swinViT.``) got nothing, or less than half of its tensors.
    """
    source = source if isinstance(source, WeightsSource) else read_weights(source)
    order, why = patch_merging or choose_patch_merging(source)
    mapped = to_swinunetr_keys(source.state, source.layout)
    if encoder_only:
        mapped = {k: v for k, v in mapped.items() if k.startswith("swinViT.")}
    target = network.state_dict()
    usable = {k: v for k, v in mapped.items() if k in target and target[k].shape == v.shape}
    mismatched = sum(1 for k, v in mapped.items() if k in target and target[k].shape != v.shape)
    network.load_state_dict(usable, strict=False)
    # Learned encoder tensors (index buffers match whatever the feature size, so they do not count).
    encoder_keys = [k for k in target if k.startswith("swinViT.") and not k.endswith("relative_position_index")]
    decoder_keys = [k for k in target if is_decoder_key(k)]
    report = LoadReport(
        source=str(source.path),
        layout=source.layout + (", DDP" if source.data_parallel else ""),
        matched=len(usable),
        missing=len([k for k in target if k not in usable]),
        unexpected=len([k for k in mapped if k not in target]),
        shape_mismatch=mismatched,
        encoder_matched=len([k for k in usable if k in encoder_keys]),
        encoder_total=len(encoder_keys),
        patch_merging=order,
        patch_merging_reason=why,
        decoder_matched=len([k for k in usable if k in decoder_keys]),
        decoder_total=len(decoder_keys),
        output_loaded=any(k.startswith("out.") for k in usable),
        encoder_only=encoder_only,
    )
    if report.encoder_matched < max(1, report.encoder_total // 2):
        raise WeightsError(f"{source.path}: no usable encoder weights for this model ({report.summary()}); check the feature size and layout")
    return report

"""Reading weights from untrusted files and mapping public key layouts onto MONAI's SwinUNETR.

Layouts:
- ``tang-ssl``: the released Tang et al. ``model_swinvit.pt`` (``state_dict``; ``module.`` prefix;
  ``layers{1-4}.0.blocks...``; ``mlp.fc1/fc2``), trained with the pre-1.5 patch-merging order;
- ``monai-ssl``: MONAI's 50k-volume SSL weights (``model``; ``encoder.`` prefix with an extra
  ``.0`` after the stage index; decoder keys ignored), pre-1.5 merging order;
- ``swinunetr``: a full SwinUNETR state dict (``swinViT.``, ``encoder1``...), e.g. a MONAI bundle's
  ``models/model.pt`` or a model package;
- ``swinssl-pretrain``: a pretraining checkpoint or encoder export of ours (``swinViT.`` + heads).
Files are read with safetensors or ``torch.load(weights_only=True)``: a pickle that would run
code is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from swinssl.io.weights_file import WeightsFileError, load_safetensors, load_torch_file

LEGACY_MERGING_LAYOUTS = ("tang-ssl", "monai-ssl")
CONTAINER_KEYS = ("state_dict", "model", "network", "net", "model_state_dict")


WeightsError = WeightsFileError  # weights that cannot be read or that load nothing useful; the message names the file


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a weights-only torch checkpoint, unwrapped from common containers."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    data = load_torch_file(path)
    while isinstance(data, dict) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        inner = next((data[k] for k in CONTAINER_KEYS if isinstance(data.get(k), dict)), None)
        if inner is None:
            break
        data = inner
    if not isinstance(data, dict) or not any(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path}: holds no state dict (looked inside {', '.join(CONTAINER_KEYS)})")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    keys = list(state)
    if any(k.startswith("encoder.layers") or k.startswith("encoder.patch_embed") for k in keys):
        return "monai-ssl"
    if any(re.match(r"(module\.)?layers[1-4]\.0\.blocks\.", k) for k in keys):
        return "tang-ssl"
    if any(k.startswith("swinViT.") for k in keys):
        return "swinssl-pretrain" if any(k.startswith(("rotation_head.", "contrastive_head.")) for k in keys) else "swinunetr"
    raise WeightsError(f"unknown weight layout (first keys: {keys[:3]})")


def to_swinunetr_keys(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Renames keys to SwinUNETR's; keys with no SwinUNETR counterpart (SSL heads) are dropped."""
    mapped = {}
    for key, value in state.items():
        if layout == "tang-ssl":
            key = key.removeprefix("module.")
            if not key.startswith(("patch_embed.", "layers")):
                continue
            key = "swinViT." + key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")
        elif layout == "monai-ssl":
            match = re.match(r"encoder\.(layers[1-4])\.0\.0\.(.*)", key)
            if match:
                key = f"swinViT.{match.group(1)}.0.{match.group(2)}"
            elif key.startswith("encoder.patch_embed."):
                key = "swinViT." + key.removeprefix("encoder.")
            else:
                continue
        elif layout == "swinssl-pretrain":
            if not key.startswith("swinViT."):
                continue
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
    legacy_patch_merging: bool

    def summary(self) -> str:
        return (f"{self.source} ({self.layout}): {self.matched} tensors loaded, {self.missing} missing, {self.unexpected} unexpected, "
                f"{self.shape_mismatch} of other shape; encoder {self.encoder_matched}/{self.encoder_total}")


def load_weights(network: torch.nn.Module, path: str | Path) -> LoadReport:
    """Loads every tensor of ``path`` whose name and shape match ``network`` (a SwinUNETR).

    Raises:
        WeightsError: when the encoder (``swinViT.``) got nothing, or less than half of its tensors.
    """
    state = read_state_dict(path)
    layout = detect_layout(state)
    mapped = to_swinunetr_keys(state, layout)
    target = network.state_dict()
    usable = {k: v for k, v in mapped.items() if k in target and target[k].shape == v.shape}
    mismatched = sum(1 for k, v in mapped.items() if k in target and target[k].shape != v.shape)
    network.load_state_dict(usable, strict=False)
    # Learned encoder tensors (index buffers match whatever the feature size, so they do not count).
    encoder_keys = [k for k in target if k.startswith("swinViT.") and not k.endswith("relative_position_index")]
    report = LoadReport(
        source=str(path),
        layout=layout,
        matched=len(usable),
        missing=len([k for k in target if k not in usable]),
        unexpected=len([k for k in mapped if k not in target]),
        shape_mismatch=mismatched,
        encoder_matched=len([k for k in usable if k in encoder_keys]),
        encoder_total=len(encoder_keys),
        legacy_patch_merging=layout in LEGACY_MERGING_LAYOUTS,
    )
    if report.encoder_matched < max(1, report.encoder_total // 2):
        raise WeightsError(f"{path}: no usable encoder weights for this model ({report.summary()}); check the feature size and layout")
    return report

"""Installed model packages (``swinssl models list | import``) and conversion of other sources into packages.

Packages live in ``$SWINSSL_MODELS`` or ``~/.local/share/swinssl/models``, one folder each; the
Segment module lists this folder. Listing reads only ``model.json`` files (no torch, MONAI or
matplotlib import), so a GUI can list models without loading the deep-learning stack.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

from swinssl.io.weights_file import load_safetensors
from swinssl.labels.table import LabelTable
from swinssl.package import MODEL_JSON, WEIGHTS, InputChannel, ModelPackage, load_package

LOG = logging.getLogger(__name__)
# What load_package raises for a model.json that cannot be read or is malformed (a list, a null ROI, ...): a face skips
# such a package, or names it, instead of failing.
UNREADABLE_PACKAGE = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError)


def models_dir() -> Path:
    if os.environ.get("SWINSSL_MODELS"):
        return Path(os.environ["SWINSSL_MODELS"])
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "swinssl" / "models"


BUNDLED_MODELS = Path(__file__).parent / "resources"
BUNDLED_NOTES = {"demo_organs": "demo: one CT"}  # carried packages (folder name -> what they are), listed after the installed ones


def bundled_packages() -> list[tuple[ModelPackage, str]]:
    """The packages carried inside swinssl (the demo organ model), each with its note."""
    return [(load_package(BUNDLED_MODELS / folder), note) for folder, note in BUNDLED_NOTES.items()
            if (BUNDLED_MODELS / folder / MODEL_JSON).is_file()]


def unshadowed_bundled(installed: list[ModelPackage]) -> list[tuple[ModelPackage, str]]:
    """The bundled packages, each with its note, that no installed package of the same name hides (installed ones come first)."""
    names = {package.name for package in installed}
    return [(package, note) for package, note in bundled_packages() if package.name not in names]


def resolve_model(reference: str | Path, root: Path | None = None) -> Path:
    """A package folder given as a path, a folder name in the models folder, an installed model's name, or the name of
    a bundled one (an installed model of the same name comes first)."""
    root = root or models_dir()
    for folder in (Path(reference), root / str(reference)):
        if (folder / MODEL_JSON).is_file():
            return folder
    installed = list_packages(root)
    match = next((package.path for package in installed if package.name == str(reference)), None)
    match = match or next((package.path for package, _ in bundled_packages() if package.name == str(reference)), None)
    if match is None:
        names = ", ".join(package.name for package in installed) or "none"
        bundled = ", ".join(package.name for package, _ in bundled_packages())
        raise ValueError(f"{reference}: neither a model package folder nor an installed model (installed in {root}: {names}; "
                         f"bundled: {bundled})")
    return match


def list_packages(root: Path | None = None) -> list[ModelPackage]:
    """Every valid package under ``root`` (default: :func:`models_dir`), sorted by name, numbers by value
    (``demo-organs-tuned-2`` before ``demo-organs-tuned-10``). A package whose ``model.json`` cannot be read or is
    malformed (a list, a null ROI, ...) is left out and named in the log: one bad folder never hides the others."""
    root = root or models_dir()
    packages = []
    for meta in sorted(root.glob(f"*/{MODEL_JSON}")) if root.is_dir() else []:
        try:
            packages.append(load_package(meta.parent))
        except UNREADABLE_PACKAGE as error:
            LOG.warning("skipped model package %s: %s: %s", meta, type(error).__name__, error)
    return sorted(packages, key=lambda p: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", p.name)])


def _walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _first(config: Any, target: str) -> dict | None:
    return next((n for n in _walk(config) if str(n.get("_target_", "")).split(".")[-1] == target), None)


def package_from_bundle(bundle: Path, patch_merging: str | None = None) -> tuple[ModelPackage, dict]:
    """A MONAI model-zoo bundle (configs/metadata.json + configs/inference.json + models/model.pt); the patch-merging
    order follows the bundle's ``monai_version`` unless ``patch_merging`` says otherwise."""
    from swinssl.network import build_swin_unetr
    from swinssl.weights import choose_patch_merging, load_weights, read_weights

    try:
        metadata = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
        inference = json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{bundle}: not a readable MONAI bundle ({error})") from error
    network_def = inference.get("network_def") or _first(inference, "SwinUNETR")
    if not network_def or "SwinUNETR" not in str(network_def.get("_target_", "")):
        raise ValueError(f"{bundle}: the bundle's network is not a SwinUNETR")
    channel_def = metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {}).get("channel_def", {})
    names = [channel_def[k] for k in sorted(channel_def, key=int) if int(k) != 0]
    if len(names) + 1 != int(network_def.get("out_channels", len(names) + 1)):
        names = [f"label_{i}" for i in range(1, int(network_def["out_channels"]))]
    spacing_def = _first(inference, "Spacingd")
    scale_def = _first(inference, "ScaleIntensityRanged")
    roi = _first(inference, "SlidingWindowInferer") or {}
    roi_size = roi.get("roi_size", network_def.get("img_size", 96))
    package = ModelPackage(
        name=metadata.get("name", bundle.name),
        version=str(metadata.get("version", "1.0")),
        description=metadata.get("description", ""),
        labels=LabelTable.from_names(names),
        channels=[InputChannel("CT", "ct", (float(scale_def["a_min"]), float(scale_def["a_max"])) if scale_def else None)],
        spacing=tuple(float(v) for v in (spacing_def or {}).get("pixdim", (1.5, 1.5, 2.0))),
        roi=int(roi_size[0] if isinstance(roi_size, list) else roi_size),
        feature_size=int(network_def.get("feature_size", 48)),
        monai_version=metadata.get("monai_version"),
        training={"source": f"MONAI bundle {bundle.name}", "bundle_version": metadata.get("version")},
    )
    source = read_weights(bundle / "models" / "model.pt")
    merging = choose_patch_merging(source, patch_merging)
    package.patch_merging = merging[0]
    package.training["patch_merging"] = f"{merging[0]} ({merging[1]})"
    network = build_swin_unetr(int(network_def.get("in_channels", 1)), package.labels.num_classes, package.feature_size, merging[0] == "legacy")
    report = load_weights(network, source, merging)
    if report.missing:
        raise ValueError(f"{bundle}: the weights do not fill the network ({report.summary()})")
    return package, network.state_dict()


def package_from_finetune_checkpoint(checkpoint_path: Path, patch_merging: str | None = None) -> tuple[ModelPackage, dict]:
    """The last state of a fine-tuning run (its package holds the best state already), with the order it trained with."""
    from swinssl.training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.get("kind") != "finetune":
        raise ValueError(f"{checkpoint_path}: a {checkpoint.get('kind')} checkpoint has no segmentation head; fine-tune it first")
    config, extra = checkpoint["config"], checkpoint.get("extra", {})
    if "labels" not in extra:
        raise ValueError(f"{checkpoint_path}: the checkpoint carries no label table (made by an older swinssl); import the run's package folder instead")
    package = ModelPackage(
        name=Path(config["out"]).name, labels=LabelTable.from_list(extra["labels"]),
        channels=[InputChannel(config["modality"], config["preset"], tuple(config["window"]) if config["window"] else None)],
        spacing=tuple(config["spacing"]), roi=config["roi"], feature_size=config["feature_size"],
        patch_merging=patch_merging or config.get("patch_merging") or ("legacy" if extra.get("legacy_patch_merging") else "v1.5"),
        monai_version=checkpoint.get("monai_version"),
        training={"source": str(checkpoint_path), "step": checkpoint["step"]},
    )
    return package, checkpoint["model"]


def import_model(source: Path, root: Path | None = None, name: str | None = None, patch_merging: str | None = None,
                 check_weights: bool = True) -> Path:
    """Installs a package, a MONAI bundle, a fine-tuning run or its checkpoint as a package folder.
    ``patch_merging`` overrides the order the source records (or, for a bundle, its MONAI version implies).
    ``check_weights`` False skips loading a package's weights into its network (which imports torch and MONAI): only
    for a package the engine has just written, installed by a face whose GUI thread must not wait for those imports."""
    root = root or models_dir()
    if (source / MODEL_JSON).is_file():
        package = load_package(source)
        if check_weights:
            package.build_network()  # refuses weights that do not load into the network model.json describes
        package.name = name or package.name
        destination = root / package.name
        if destination.resolve() != source.resolve():
            shutil.copytree(source, destination, dirs_exist_ok=True, ignore=shutil.ignore_patterns("training", ".*"))
        package.path = destination
        if patch_merging and patch_merging != package.patch_merging:  # the weights' own metadata must say it too
            package.patch_merging = patch_merging
            return package.save(destination, load_safetensors(destination / WEIGHTS))
        package.write_metadata()  # the --name, and readable modes for a shared models folder
        return destination
    if (source / "configs").is_dir() and (source / "models" / "model.pt").is_file():
        package, state = package_from_bundle(source, patch_merging)
    elif source.is_file() or (source / "training" / "checkpoint.pt").is_file():
        package, state = package_from_finetune_checkpoint(source if source.is_file() else source / "training" / "checkpoint.pt", patch_merging)
    else:
        raise ValueError(f"{source}: not a model package, MONAI bundle, fine-tuning run or checkpoint")
    package.name = name or package.name
    return package.save(root / package.name, state)

"""Finding labelled cases: MSD folders, ``<name>`` + ``<name>_label(s)/_seg`` pairs, MONAI datalists,
``.seg.nrrd`` files beside their volume, and Slicer ``.mrb`` bundles."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from swinssl.finetune.scene import scene_pairs
from swinssl.io.archive import safe_extract
from swinssl.io.discovery import VOLUME_SUFFIXES, VolumeSource, find_volumes, looks_like_label, volume_stem

LABEL_SUFFIXES = ("_label", "_labels", "_seg")


@dataclass(frozen=True)
class LabelledCase:
    """An image and its label file; ``names`` maps label values in that file to segment names
    (empty for ``.seg.nrrd``, which carries its own names)."""

    image: VolumeSource
    label: Path
    names: dict[int, str] = field(default_factory=dict)
    split: str = "training"

    @property
    def name(self) -> str:
        """The label file's name without its suffix (``.seg.nrrd`` included)."""
        stem = volume_stem(self.label)
        return stem.removesuffix(".seg") if self.label.name.lower().endswith(".seg.nrrd") else stem


def names_from_mapping(mapping: dict) -> dict[int, str]:
    """{"1": "liver"} (MSD, TotalSegmentator) or {"liver": 1} (nnU-Net v2) -> {1: "liver"}, background dropped."""
    names = {}
    for key, value in mapping.items():
        if str(key).lstrip("-").isdigit():
            names[int(key)] = str(value)
        elif isinstance(value, int) or str(value).isdigit():
            names[int(value)] = str(key)
    return {v: n for v, n in names.items() if v != 0}


def label_names_in(folder: Path) -> dict[int, str]:
    """A {value: name} table from a JSON file in the folder (``dataset.json`` labels, or a plain mapping)."""
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("labels"), dict):
            return names_from_mapping(data["labels"])
        if isinstance(data, dict) and data and all(str(k).isdigit() and isinstance(v, str) for k, v in data.items()):
            return names_from_mapping(data)
    return {}


def _resolve(base: Path, entry: str) -> Path:
    path = Path(entry)
    return path if path.is_absolute() else (base / path)


def cases_from_datalist(path: Path) -> list[LabelledCase]:
    """MONAI/MSD-style JSON: ``training`` / ``validation`` lists of {image, label}; ``labels`` names."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable datalist ({error})") from error
    names = names_from_mapping(data.get("labels", {})) if isinstance(data.get("labels"), dict) else {}
    cases = []
    for split in ("training", "validation"):
        for entry in data.get(split, []):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                continue
            image = entry["image"][0] if isinstance(entry["image"], list) else entry["image"]
            image_path = _resolve(path.parent, image)
            source = VolumeSource(image_path) if image_path.is_file() or not image_path.is_dir() else _single_source(image_path)
            cases.append(LabelledCase(source, _resolve(path.parent, entry["label"]), names, split))
    if not cases:
        raise ValueError(f"{path}: no training or validation entries with image and label")
    return cases


def _single_source(folder: Path) -> VolumeSource:
    sources, _ = find_volumes([folder])
    if len(sources) != 1:
        raise ValueError(f"{folder}: expected one image (file or DICOM series), found {len(sources)}")
    return sources[0]


def _label_for(image: Path) -> Path | None:
    stem = volume_stem(image) if image.is_file() else image.name
    for suffix in LABEL_SUFFIXES:
        for extension in VOLUME_SUFFIXES:
            candidate = image.parent / f"{stem}{suffix}{extension}"
            if candidate.is_file():
                return candidate
    candidate = image.parent / f"{stem}.seg.nrrd"
    return candidate if candidate.is_file() else None


def cases_from_folder(folder: Path) -> list[LabelledCase]:
    """MSD layout when ``dataset.json`` lists training cases, else side-by-side pairs (recursively)."""
    if (folder / "dataset.json").is_file():
        data = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        if data.get("training"):
            return cases_from_datalist(folder / "dataset.json")
    cases = []
    for image in sorted(p for p in folder.rglob("*") if (p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES) and not looks_like_label(p)) or p.is_dir()):
        label = _label_for(image)
        if label is None:
            continue
        source = VolumeSource(image) if image.is_file() else _single_source(image)
        names = {} if label.name.lower().endswith(".seg.nrrd") else label_names_in(label.parent)
        cases.append(LabelledCase(source, label, names))
    return cases


def cases_from_scene(path: Path, extract_root: Path) -> list[LabelledCase]:
    """A ``.seg.nrrd`` (paired with the volume of the same stem beside it) or an ``.mrb`` bundle."""
    if path.name.lower().endswith(".seg.nrrd"):
        stem = path.name[: -len(".seg.nrrd")]
        for extension in VOLUME_SUFFIXES:
            image = path.parent / f"{stem}{extension}"
            if image.is_file():
                return [LabelledCase(VolumeSource(image), path)]
        raise ValueError(f"{path}: no volume named {stem}.nrrd/.nii.gz/... beside it to pair with")
    if path.suffix.lower() == ".mrb":
        folder = Path(tempfile.mkdtemp(prefix=f"{path.stem}-", dir=extract_root))
        files = safe_extract(path, folder)
        try:
            cases = [LabelledCase(VolumeSource(volume), segmentation) for mrml in files if mrml.suffix == ".mrml" for volume, segmentation in scene_pairs(mrml)]
        except ValueError as error:  # names the extracted copy: say which .mrb it came from
            raise ValueError(f"{path}: {str(error).replace(str(folder), '').lstrip('/: ')}") from error
        if not cases:
            raise ValueError(f"{path}: the scene holds no segmentation with a reference volume")
        return cases
    if path.is_dir():
        return [case for child in sorted(path.rglob("*")) if child.name.lower().endswith((".mrb", ".seg.nrrd")) for case in cases_from_scene(child, extract_root)]
    raise ValueError(f"{path}: expected a .mrb, a .seg.nrrd or a folder of them")

"""Slicer scene bundles (.mrb): safe extraction and volume/segmentation pairs from the MRML file."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
import zipfile
from urllib.parse import unquote
from pathlib import Path


class SceneError(ValueError):
    """An unusable scene file; the message names it."""


def safe_extract(archive: Path, target: Path) -> list[Path]:
    """Extracts a zip archive, refusing any member whose path would leave ``target``."""
    target = target.resolve()
    target.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                destination = (target / member.filename).resolve()
                if destination != target and target not in destination.parents:
                    raise SceneError(f"{archive}: member {member.filename!r} would be written outside the extraction folder; refused")
                if member.is_dir() or member.external_attr >> 16 & 0o170000 == 0o120000:  # folders; symlinks are skipped
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, destination.open("wb") as sink:
                    sink.write(source.read())
    except zipfile.BadZipFile as error:
        raise SceneError(f"{archive}: not a valid .mrb (zip) file ({error})") from error
    return sorted(p for p in target.rglob("*") if p.is_file())


def _references(element: ElementTree.Element) -> dict[str, list[str]]:
    """MRML ``references="role:id1 id2;role2:id3;"`` -> {role: [ids]}."""
    result: dict[str, list[str]] = {}
    for part in (element.get("references") or "").split(";"):
        if ":" in part:
            role, ids = part.split(":", 1)
            result[role.strip()] = ids.split()
    return result


def scene_pairs(mrml: Path) -> list[tuple[Path, Path]]:
    """(volume file, .seg.nrrd file) for each segmentation node whose reference volume has a file."""
    try:
        root = ElementTree.parse(mrml).getroot()
    except ElementTree.ParseError as error:
        raise SceneError(f"{mrml}: unreadable MRML ({error})") from error
    nodes = {element.get("id"): element for element in root.iter() if element.get("id")}

    def stored_file(node: ElementTree.Element) -> Path | None:
        for storage_id in _references(node).get("storage", []):
            storage = nodes.get(storage_id)
            if storage is not None and storage.get("fileName"):
                path = Path(unquote(storage.get("fileName")))  # Slicer URL-encodes file names in MRML
                return path if path.is_absolute() else (mrml.parent / path)
        return None

    pairs = []
    for node in nodes.values():
        if node.tag != "Segmentation":
            continue
        volume_ids = _references(node).get("referenceImageGeometryRef", [])
        volume = nodes.get(volume_ids[0]) if volume_ids else None
        segmentation_file = stored_file(node)
        volume_file = stored_file(volume) if volume is not None else None
        if segmentation_file is not None and volume_file is not None:
            pairs.append((volume_file, segmentation_file))
    return pairs

"""Slicer scene bundles (.mrb): volume/segmentation pairs from the MRML file (extraction: :mod:`swinssl.io.archive`)."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from urllib.parse import unquote
from pathlib import Path


class SceneError(ValueError):
    """An unusable scene file; the message names it."""


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

"""CT/PET pairs in folders, by a naming rule.

Two layouts are recognised (case-insensitive):
- side by side: ``<case>_ct.<ext>`` and ``<case>_pet.<ext>`` in one folder, with optional labels
  ``<case>_labels.<ext>`` drawn on the CT;
- subfolders: ``ct/<case>.<ext>`` and ``pet/<case>.<ext>`` under one parent, with optional labels
  ``labels/<case>.<ext>``.
``<ext>`` is any volume suffix of :mod:`swinssl.io.discovery`. A CT or PET without its partner is
reported as unpaired.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swinssl.io.discovery import VOLUME_SUFFIXES, volume_stem


@dataclass(frozen=True)
class ModalityPair:
    case: str
    ct: Path
    pet: Path
    label: Path | None = None  # on the CT's grid


def _volumes(folder: Path) -> dict[str, Path]:
    """Lower-case stem -> file for the volume files directly in ``folder``."""
    if not folder.is_dir():
        return {}
    return {volume_stem(p).lower(): p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)}


def _side_by_side(folder: Path) -> tuple[list[ModalityPair], list[Path]]:
    files = _volumes(folder)
    cts = {stem[: -len("_ct")]: path for stem, path in files.items() if stem.endswith("_ct")}
    pets = {stem[: -len("_pet")]: path for stem, path in files.items() if stem.endswith("_pet")}
    pairs = [ModalityPair(volume_stem(cts[c])[: -len("_ct")], cts[c], pets[c], files.get(f"{c}_labels")) for c in sorted(cts.keys() & pets.keys())]
    unpaired = [cts[c] for c in cts.keys() - pets.keys()] + [pets[c] for c in pets.keys() - cts.keys()]
    return pairs, unpaired


def _subfolders(folder: Path) -> tuple[list[ModalityPair], list[Path]]:
    cts, pets, labels = _volumes(folder / "ct"), _volumes(folder / "pet"), _volumes(folder / "labels")
    pairs = [ModalityPair(volume_stem(cts[c]), cts[c], pets[c], labels.get(c)) for c in sorted(cts.keys() & pets.keys())]
    unpaired = [cts[c] for c in cts.keys() - pets.keys()] + [pets[c] for c in pets.keys() - cts.keys()]
    return pairs, unpaired


def find_ct_pet_pairs(roots: list[str | Path]) -> tuple[list[ModalityPair], list[Path]]:
    """All pairs under ``roots`` (searched recursively) and the files left without a partner."""
    pairs: list[ModalityPair] = []
    unpaired: list[Path] = []
    folders = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a folder")
        folders += [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    for folder in folders:
        for found, lost in (_side_by_side(folder), _subfolders(folder)):
            pairs += found
            unpaired += lost
    return pairs, sorted(set(unpaired))

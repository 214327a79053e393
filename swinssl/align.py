"""``swinssl align``: CT/PET pairs registered and stacked into 2-channel volumes on the PET grid.

For each pair found by :mod:`swinssl.io.pairs`: the CT is registered to the PET (rigid mutual
information, optionally then affine; ``register=False`` for data already aligned), resampled onto
the PET's exact grid, and written with the PET as ``OUT/<case>_ctpet.nrrd`` (float32, 2 components:
channel 0 CT in HU, channel 1 PET as stored). Labels drawn on the CT go to
``OUT/<case>_ctpet_labels.nrrd`` (nearest neighbour) and label-name JSON tables are copied, so the
output folder feeds ``swinssl pretrain|finetune --channel-presets ct pet`` and ``swinssl segment``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import SimpleITK as sitk

from swinssl.events import EventLog
from swinssl.io.atomic import atomic_path
from swinssl.io.discovery import VolumeSource
from swinssl.io.pairs import ModalityPair, find_ct_pet_pairs
from swinssl.io.reader import VolumeError, read_volume
from swinssl.preprocessing.registration import Registration, ct_on_pet_grid, labels_on_pet_grid, register_images


def _write(image: sitk.Image, path: Path) -> None:
    """Writes through a temporary file and a rename, so a stopped run leaves no half-written volume."""
    with atomic_path(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=True)


def align_pair(pair: ModalityPair, out: Path, register: bool, affine: bool) -> tuple[list[Path], Registration | None]:
    """Aligns one pair into ``out``; returns (written files, the registration or None)."""
    ct, pet = read_volume(VolumeSource(pair.ct), 1), read_volume(VolumeSource(pair.pet), 1)
    registration = register_images(pet, ct, affine) if register else None  # the PET is fixed
    stacked = sitk.Compose(ct_on_pet_grid(ct, pet, registration), sitk.Cast(pet, sitk.sitkFloat32))
    written = [out / f"{pair.case}_ctpet.nrrd"]
    _write(stacked, written[0])
    if pair.label is not None:
        written.append(out / f"{pair.case}_ctpet_labels.nrrd")
        _write(labels_on_pet_grid(sitk.ReadImage(str(pair.label)), pet, registration), written[1])
    return written, registration


def align_folders(roots: list[str], out: Path, events: EventLog, register: bool = True, affine: bool = False) -> list[Path]:
    """Aligns every pair under ``roots``; a pair that fails is skipped with a warning event."""
    pairs, unpaired = find_ct_pet_pairs(roots)
    for path in unpaired:
        events.emit("warning", file=str(path), reason="no CT/PET partner (expected <case>_ct.* + <case>_pet.*, or ct/<case>.* + pet/<case>.*)")
    if not pairs:
        raise ValueError(f"no CT/PET pairs in {', '.join(map(str, roots))}; name them <case>_ct.* and <case>_pet.*, or use ct/ and pet/ subfolders")
    out.mkdir(parents=True, exist_ok=True)
    events.emit("start", task="align", pairs=len(pairs), register=register, affine=affine, out=out)
    written: list[Path] = []
    for number, pair in enumerate(pairs, 1):
        try:
            files, registration = align_pair(pair, out, register, affine)
        except (VolumeError, RuntimeError) as error:
            source = error.source if isinstance(error, VolumeError) else str(pair.ct)
            reason = error.reason if isinstance(error, VolumeError) else f"registration failed ({str(error).strip().splitlines()[-1]})"
            events.emit("warning", file=source, reason=reason)
            continue
        written += files
        events.emit("progress", stage="align", case=pair.case, ct=pair.ct, pet=pair.pet, outputs=files,
                    registration=registration.to_dict() if registration else None, step=number, total=len(pairs))
    for table in sorted({p for pair in pairs for p in pair.ct.parent.glob("*.json")}):
        if not (out / table.name).exists():
            shutil.copy(table, out / table.name)
    events.emit("done", outputs={"folder": out, "files": written})
    return written

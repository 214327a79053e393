"""A synthetic PET-like volume built from a real CT and its labels (no real PET is available here).

Uptake (SUV-like): air 0, lung 0.3, soft tissue 1.0, bone 0.6, and organ values from the labels
(liver 2.5, spleen 2.0, kidneys 5.0, heart 3.0, urinary bladder 12.0) plus two 15-SUV spheres in the
liver; smoothed like a PET point-spread function (5 mm), sampled on a coarser 4 mm grid through a
known rigid motion (the patient moved between the acquisitions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ORGAN_SUV = {"liver": 2.5, "spleen": 2.0, "kidney_left": 5.0, "kidney_right": 5.0, "heart": 3.0, "urinary_bladder": 12.0}
PET_SPACING = 4.0


def known_motion(center: tuple[float, float, float]) -> sitk.Euler3DTransform:
    """PET physical point -> CT physical point: 4 degrees about z, then (7.5, -5, 9) mm (LPS)."""
    motion = sitk.Euler3DTransform()
    motion.SetCenter(center)
    motion.SetRotation(0.0, 0.0, np.deg2rad(4.0))
    motion.SetTranslation((7.5, -5.0, 9.0))
    return motion


def uptake_map(ct: sitk.Image, labels: sitk.Image, names: dict[int, str]) -> sitk.Image:
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)  # (K, J, I)
    label = sitk.GetArrayFromImage(labels)
    suv = np.zeros_like(hu)
    suv[(hu > -950) & (hu <= -300)] = 0.3
    suv[(hu > -300) & (hu <= 300)] = 1.0
    suv[hu > 300] = 0.6
    for value, name in names.items():
        if name in ORGAN_SUV:
            suv[label == value] = ORGAN_SUV[name]
    liver = next((v for v, n in names.items() if n == "liver"), None)
    if liver is not None and (label == liver).any():
        k, j, i = np.argwhere(label == liver).mean(axis=0)
        kk, jj, ii = np.indices(hu.shape)
        for offset in (-4, 4):
            suv[(kk - k) ** 2 + (jj - j - offset) ** 2 + (ii - i) ** 2 < 9] = 15.0
    image = sitk.GetImageFromArray(suv)
    image.CopyInformation(ct)
    return sitk.SmoothingRecursiveGaussian(image, 5.0)


def pet_like(ct: sitk.Image, labels: sitk.Image, names: dict[int, str]) -> tuple[sitk.Image, sitk.Euler3DTransform]:
    """(PET-like float32 image on a 4 mm grid, the true PET->CT motion)."""
    size = [int(round(n * s / PET_SPACING)) for n, s in zip(ct.GetSize(), ct.GetSpacing())]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing((PET_SPACING,) * 3)
    grid.SetOrigin(ct.GetOrigin())
    grid.SetDirection(ct.GetDirection())
    center = ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ct.GetSize()])
    motion = known_motion(center)
    return sitk.Resample(uptake_map(ct, labels, names), grid, motion, sitk.sitkLinear, 0.0, sitk.sitkFloat32), motion


def write_ct_pet_case(shared_data: Path, folder: Path, case: str = "patient1") -> sitk.Euler3DTransform:
    """Writes ``<case>_ct.nii.gz`` (the real abdomen CT), ``<case>_pet.nii.gz`` (synthetic),
    ``<case>_labels.nii.gz`` (CT grid) and the label-name table; returns the true motion."""
    ct = sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_3mm.nii.gz"))
    labels = sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_3mm_labels.nii.gz"))
    names = {int(k): v for k, v in json.loads((shared_data / "ct" / "totalsegmentator_label_names.json").read_text(encoding="utf-8")).items()}
    pet, motion = pet_like(ct, labels, names)
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ct, str(folder / f"{case}_ct.nii.gz"))
    sitk.WriteImage(pet, str(folder / f"{case}_pet.nii.gz"))
    sitk.WriteImage(labels, str(folder / f"{case}_labels.nii.gz"))
    (folder / "labels.json").write_text(json.dumps({str(k): v for k, v in names.items()}))
    return motion

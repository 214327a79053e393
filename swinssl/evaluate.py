"""``swinssl evaluate``: per-class Dice, HD95 and surface Dice between a predicted and a reference label map.

Classes are matched by segment name when both files carry names (.seg.nrrd, or NIfTI + JSON label
table), else by label value. Metrics come from MONAI, computed per class on the bounding box of
the union of both masks (plus a margin), so large volumes never need one-hot maps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

from swinssl.io.reader import check_gzip_stream
from swinssl.labels.segmentation_file import label_table_path, read_seg_nrrd
from swinssl.labels.table import normalize_name, read_names_file

MARGIN = 2


def read_labelled(path: Path) -> tuple[sitk.Image, dict[int, str]]:
    """A label map and its {value: name} (names from the .seg.nrrd or a sibling JSON label table)."""
    if path.name.lower().endswith(".seg.nrrd"):
        image, names, _, _ = read_seg_nrrd(path)
        return image, names
    if path.name.lower().endswith(".gz"):
        check_gzip_stream(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ValueError(f"{path}: unreadable label map") from error
    table_path = label_table_path(path)
    names = {}
    if table_path.is_file():
        names = {int(e["value"]): e["name"] for e in json.loads(table_path.read_text(encoding="utf-8")).get("labels", [])}
    if not names:
        values = np.unique(sitk.GetArrayViewFromImage(image))
        names = {int(v): f"label_{int(v)}" for v in values if v != 0}
    return image, names


def _class_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tolerance: float) -> dict[str, float | None]:
    if not pred.any() and not ref.any():
        return {"dice": None, "hd95_mm": None, "surface_dice": None}
    if not pred.any() or not ref.any():
        return {"dice": 0.0, "hd95_mm": None, "surface_dice": 0.0}
    union = np.argwhere(pred | ref)
    low = np.maximum(union.min(0) - MARGIN, 0)
    high = np.minimum(union.max(0) + MARGIN + 1, pred.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    p = torch.from_numpy(pred[box].astype(np.float32))[None, None]
    r = torch.from_numpy(ref[box].astype(np.float32))[None, None]
    return {
        "dice": float(compute_dice(p, r, include_background=True)[0, 0]),
        "hd95_mm": float(compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(spacing))[0, 0]),
        "surface_dice": float(compute_surface_dice(p, r, [tolerance], include_background=True, spacing=list(spacing))[0, 0]),
    }


MIN_OVERLAP = 0.5  # share of the reference's box the prediction must cover to be resampled onto it


def physical_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) LPS corner of the image's voxel centres, in mm."""
    size = np.asarray(image.GetSize()) - 1
    corners = [image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
               for corner in np.array(np.meshgrid(*[(0, n) for n in size])).reshape(3, -1).T]
    return np.min(corners, axis=0), np.max(corners, axis=0)


def box_overlap(image: sitk.Image, reference: sitk.Image) -> float:
    """Share of ``reference``'s physical box (volume) that ``image``'s box covers."""
    (low_a, high_a), (low_b, high_b) = physical_box(image), physical_box(reference)
    inside = np.clip(np.minimum(high_a, high_b) - np.maximum(low_a, low_b), 0, None)
    return float(np.prod(inside) / max(np.prod(high_b - low_b), 1e-9))


def same_grid(image: sitk.Image, reference: sitk.Image) -> bool:
    """Same size, origin, spacing and direction (to 1e-3)."""
    return image.GetSize() == reference.GetSize() and all(
        np.allclose(getattr(image, name)(), getattr(reference, name)(), atol=1e-3) for name in ("GetOrigin", "GetSpacing", "GetDirection"))


def _mm(spacing: tuple[float, ...]) -> str:
    return " x ".join(f"{value:.3g}" for value in spacing) + " mm"


def evaluate(pred_path: Path, ref_path: Path, tolerance_mm: float = 2.0, ref_names_path: Path | None = None) -> dict:
    """Metrics per class shared by name, and their means over classes present in either map; ``compared`` says on
    which grid (a prediction on another grid is resampled onto the reference's).

    Raises:
        ValueError: the maps do not overlap, or no class can be scored (none shared, or all absent from both).

    ``ref_names_path``: a names table (JSON {value: name} or CSV value,name) for a reference label map that carries no names.
    """
    prediction, pred_names = read_labelled(pred_path)
    reference, ref_names = read_labelled(ref_path)
    if ref_names_path is not None:
        table = read_names_file(Path(ref_names_path))
        present = {int(v) for v in np.unique(sitk.GetArrayViewFromImage(reference))} - {0}
        ref_names = {v: n for v, n in table.items() if v in present or normalize_name(n) in {normalize_name(p) for p in pred_names.values()}}
    compared = f"same grid (size {reference.GetSize()})"
    if not same_grid(prediction, reference):
        covered = box_overlap(prediction, reference)
        if covered < MIN_OVERLAP:
            raise ValueError(f"{pred_path} (size {prediction.GetSize()}) covers {covered:.0%} of the field of view of {ref_path} "
                             f"(size {reference.GetSize()}): they are not segmentations of the same scan")
        compared = (f"the prediction (size {prediction.GetSize()}, spacing {_mm(prediction.GetSpacing())}) resampled (nearest neighbour) "
                    f"onto the reference grid (size {reference.GetSize()}, spacing {_mm(reference.GetSpacing())}), which it covers "
                    f"{covered:.0%}; scored inside the reference's field of view only")
        prediction = sitk.Resample(prediction, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    pred_array = sitk.GetArrayViewFromImage(prediction)
    ref_array = sitk.GetArrayViewFromImage(reference)
    spacing = tuple(reversed(reference.GetSpacing()))  # arrays are (K, J, I)
    pred_by_name = {normalize_name(n): v for v, n in pred_names.items()}
    ref_keys = {normalize_name(n) for n in ref_names.values()}
    classes = {}
    for value, name in sorted(ref_names.items()):
        pred_value = pred_by_name.get(normalize_name(name))
        if pred_value is None:
            continue  # the prediction does not know this class: not scored (listed below)
        classes[name] = _class_metrics(pred_array == pred_value, ref_array == value, spacing, tolerance_mm)
    not_predicted = [n for n in ref_names.values() if normalize_name(n) not in pred_by_name]
    not_in_reference = [n for n in pred_names.values() if normalize_name(n) not in ref_keys]
    if not any(metrics["dice"] is not None for metrics in classes.values()):
        why = (f"{', '.join(classes)}: absent from both maps" if classes else
               f"no class of the prediction ({', '.join(pred_names.values()) or 'none'}) is named in the reference "
               f"({', '.join(ref_names.values()) or 'none'}; a reference without names needs --ref-names)")
        raise ValueError(f"{pred_path} against {ref_path}: nothing to score ({why}); compared: {compared}")
    means = {}
    for metric in ("dice", "hd95_mm", "surface_dice"):
        values = [c[metric] for c in classes.values() if c[metric] is not None and math.isfinite(c[metric])]
        means[metric] = float(np.mean(values)) if values else None
    return {"prediction": str(pred_path), "reference": str(ref_path), "compared": compared, "tolerance_mm": tolerance_mm, "classes": classes, "mean": means,
            "reference_classes_not_predicted": not_predicted, "predicted_classes_not_in_reference": not_in_reference}


def markdown_table(result: dict) -> str:
    def cell(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [f"| class | Dice | HD95 (mm) | surface Dice ({result['tolerance_mm']:g} mm) |", "|---|---|---|---|"]
    for name, metrics in list(result["classes"].items()) + [("**mean**", result["mean"])]:
        lines.append(f"| {name} | {cell(metrics['dice'])} | {cell(metrics['hd95_mm'], 1)} | {cell(metrics['surface_dice'])} |")
    return "\n".join(lines)

"""Does an input look like what a model package was trained on? Checked before the network runs, from the input
volumes alone (a strided sample of their voxels) and what the package declares: each channel's modality, the
body region (``trained_on.region``), the voxel spacing and a tiny field of view.

A doubt is a warning; an input that is certainly not the model's kind (an MR into a CT model: no air near
-1000 HU, nothing below -300) is a mismatch, which :func:`swinssl.inference.segment.segment_files` refuses unless
the user overrides it explicitly. Arrays are SimpleITK's (K, J, I).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from swinssl.package import InputChannel, ModelPackage

SAMPLE_VOXELS = 2_000_000  # voxels looked at per volume (a regular stride through it)
CT_LOWEST_HU = -300.0  # a CT in Hounsfield units has air (-1000) and lung or fat below this ...
CT_MIN_LOW_SHARE = 0.001  # ... in more than this share of its voxels
MR_MAX_LOW_SHARE = 0.05  # an MR volume has almost no voxel below -500 (a CT has air there)
LUNG_HU = (-950.0, -600.0)
CHEST_LUNG_SHARE = 0.25  # of the voxels above -950 HU (the body, with the air in it); an abdominal CT has ~0.12
HEAD_WIDTH_MM = 220.0  # body left-right extent: a head is ~150-180 mm, a trunk 280-400 mm
BODY_HU = -500.0
COARSE_SPACING_FACTOR = 3.0  # slices this many times farther apart than the model ever saw: small organs may be lost
SMALLEST_FIELD_MM = 20.0  # (a field of view longer than any body is the reader's refusal: swinssl.io.reader.check_extent)
ABDOMINAL_REGIONS = ("abdomen", "abdominal", "abdomen/pelvis", "pelvis", "trunk")
HEAD_REGIONS = ("head", "brain", "head and neck")


class InputMismatchError(ValueError):
    """The input is certainly not what the model takes; the message names the file, the reason and the model."""

    def __init__(self, source: str, reason: str, model: str, kind: str) -> None:
        super().__init__(f"{source}: {reason}; not segmented: the model {model!r} was trained on {kind}")
        self.source, self.reason = source, reason


@dataclass(frozen=True)
class FitWarning:
    file: str
    reason: str


@dataclass
class FitReport:
    """``warnings``: doubts, each about one file; ``mismatch``: the first input that is certainly not the model's kind."""

    warnings: list[FitWarning] = field(default_factory=list)
    mismatch: FitWarning | None = None


def sample(image: sitk.Image) -> tuple[np.ndarray, int]:
    """About :data:`SAMPLE_VOXELS` voxels of ``image`` as float32 (K, J, I), every ``stride``-th along each axis, and the stride."""
    array = sitk.GetArrayViewFromImage(image)
    stride = max(1, int(round((array.size / SAMPLE_VOXELS) ** (1 / 3))))
    return np.asarray(array[::stride, ::stride, ::stride], dtype=np.float32), stride


def modality_doubt(values: np.ndarray, channel: InputChannel) -> str | None:
    """Why ``values`` certainly are not of the channel's modality (CT and MR channels are checked), else None."""
    if channel.preset == "ct":
        low = float((values < CT_LOWEST_HU).mean())
        if low < CT_MIN_LOW_SHARE:
            return (f"looks like MR, not CT: no air near -1000 HU (no voxel below {CT_LOWEST_HU:g}; values "
                    f"{values.min():g} to {values.max():g}); a CT not stored in Hounsfield units looks the same")
    elif channel.preset == "mr":
        low = float((values < BODY_HU).mean())
        if low > MR_MAX_LOW_SHARE:
            return f"looks like CT, not MR: {low:.0%} of its voxels are below {BODY_HU:g} (air in Hounsfield units)"
    return None


def left_right_width_mm(image: sitk.Image, body: np.ndarray, stride: int) -> float:
    """Extent (mm) of ``body`` (a strided (K, J, I) mask of ``image``) along the image axis closest to left-right."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    axis_ijk = int(np.argmax(np.abs(direction[0])))  # image axis (I, J or K) closest to world x
    axis_array = 2 - axis_ijk
    profile = body.any(axis=tuple(a for a in range(3) if a != axis_array))
    found = np.flatnonzero(profile)
    return float((found[-1] - found[0] + 1) * stride * image.GetSpacing()[axis_ijk]) if found.size else 0.0


def region_doubt(image: sitk.Image, values: np.ndarray, stride: int, region: str) -> str | None:
    """Why a CT in HU looks like another body region than ``region`` (abdominal or head regions are checked)."""
    region = region.lower()
    width = left_right_width_mm(image, values > BODY_HU, stride)
    if region in ABDOMINAL_REGIONS:
        inside = values > LUNG_HU[0]
        lung = float(((values < LUNG_HU[1]) & inside).sum() / max(1, inside.sum()))
        if lung > CHEST_LUNG_SHARE:
            return f"looks like a chest CT, not {region}: lung fills {lung:.0%} of the body"
        if 0 < width < HEAD_WIDTH_MM:
            return f"looks like a head or a limb, not {region}: the body is only {width:.0f} mm wide"
    elif region in HEAD_REGIONS and width > HEAD_WIDTH_MM * 1.3:
        return f"looks like a body scan, not {region}: it is {width:.0f} mm wide"
    return None


def geometry_doubts(image: sitk.Image, package: ModelPackage) -> list[str]:
    """Doubts about the voxel spacing and field of view of ``image``."""
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    field_mm = spacing * np.asarray(image.GetSize())
    extent = " x ".join(f"{size:g}" for size in np.round(field_mm, 1))
    warnings = []
    if field_mm.min() < SMALLEST_FIELD_MM:
        warnings.append(f"its field of view is only {extent} mm: check the voxel spacing in its header ({spacing.round(4).tolist()} mm)")
    seen = package.trained_on.spacing_mm or (min(package.spacing), max(package.spacing))
    if spacing.max() > COARSE_SPACING_FACTOR * seen[1]:
        warnings.append(f"its voxels are {spacing.max():g} mm apart, the model was trained on {seen[1]:g} mm at most: small structures may be missed")
    return warnings


def check_input_fit(images: list[sitk.Image], names: list[str], package: ModelPackage) -> FitReport:
    """Checks each input (one per model channel, ``names`` for messages) against ``package``."""
    report = FitReport()
    for image, name, channel in zip(images, names, package.channels):
        report.warnings += [FitWarning(name, reason) for reason in geometry_doubts(image, package)]
        values, stride = sample(image)
        mismatch = modality_doubt(values, channel)
        if mismatch:
            report.mismatch = report.mismatch or FitWarning(name, mismatch)
            continue
        if channel.preset == "ct" and package.trained_on.region:
            doubt = region_doubt(image, values, stride, package.trained_on.region)
            if doubt:
                report.warnings.append(FitWarning(name, doubt))
    return report

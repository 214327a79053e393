"""``swinssl segment``: a model package applied to one patient's volume(s), written on the input grid.

Memory: the inputs stay in their stored type; each is resampled straight onto the model's RAS
grid, so float data exist only at model resolution (the resampled image and a float16 logit sum
over the windows that reach the body's box); only the uint8 label map is resampled back (nearest neighbour) onto the
exact input grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from swinssl.events import EventLog
from swinssl.inference.confidence import DEFAULT_THRESHOLD, confidence_on_input_grid, confidence_summary, write_confidence
from swinssl.inference.input_fit import InputMismatchError, check_input_fit
from swinssl.inference.plausibility import plausibility
from swinssl.inference.openvino_backend import OpenVINOFailed, chosen_backend, compiled_network, default_backend, uses_openvino
from swinssl.inference.sliding_window import sliding_window_predict
from swinssl.io.discovery import VolumeSource, find_volumes
from swinssl.io.reader import VolumeError, as_channel_image, check_values, read_image
from swinssl.labels.segmentation_file import write_label_map
from swinssl.package import ModelPackage
from swinssl.preprocessing.intensity import normalize_intensity
from swinssl.preprocessing.registration import moving_on_fixed_grid, register_images
from swinssl.preprocessing.spatial import Geometry, foreground_box, image_to_array, ras_grid, resample_onto
from swinssl.training.distributed import autocast_dtype, pick_device

FAST_SPACING_FACTOR = 1.5
AIR_HU = -500.0  # CT windows with no voxel above this are skipped


@dataclass(frozen=True)
class SegmentOptions:
    overlap: float = 0.5
    fast: bool = False
    device: str = "auto"
    batch_size: int = 4
    register: bool = False  # align channels 1.. to channel 0 (rigid MI) before stacking them
    show_progress: bool = False  # a progress bar with the ETA on the terminal
    precision: str = "auto"  # auto: bf16 (or fp16) autocast on GPUs, fp32 on the CPU; fp32; bf16 (also on the CPU)
    confidence: bool = False  # also compute the confidence map (max softmax probability)
    backend: str = field(default_factory=default_backend)  # auto: OpenVINO on the CPU when installed, else PyTorch; torch; openvino
    allow_mismatch: bool = False  # segment an input that is certainly not the model's kind (input_fit) anyway


class Segmentation(NamedTuple):
    """labels: on the first input's exact grid; confidence: float32 in [0, 1] on the same grid, or None."""

    labels: sitk.Image
    confidence: sitk.Image | None


PRECISIONS = ("auto", "fp32", "bf16")


def inference_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of the network's forward pass, None for fp32. bf16 on the CPU is opt-in: 1.75x faster at
    feature 48 on an AVX-512 BF16 CPU, but 1-2.5 % of organ voxels change label (benchmarks/RESULTS.md)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return autocast_dtype(device, enabled=True)
    return torch.bfloat16 if precision == "bf16" else None


def source_for(path: Path) -> VolumeSource:
    """A file, or a folder holding exactly one DICOM series (or volume file)."""
    if path.is_file():
        return VolumeSource(path)
    if not path.exists():
        raise VolumeError(str(path), "does not exist")
    sources, _ = find_volumes([path])
    if len(sources) != 1:
        raise VolumeError(str(path), f"holds {len(sources)} volumes; give one file or one DICOM series folder")
    return sources[0]


def read_inputs(paths: list[Path], package: ModelPackage) -> list[sitk.Image]:
    """Reads one scalar volume per model channel, in its stored pixel type (no float copy).

    A multi-channel model takes one file per channel (already aligned, as Slicer passes them) or
    one file holding all channels (for example ``swinssl align`` output: CT and PET on one grid).
    """
    channels = len(package.channels)
    if len(paths) not in (1, channels):
        names = ", ".join(c.modality for c in package.channels)
        raise ValueError(f"model {package.name!r} takes {channels} input(s) ({names}); got {len(paths)}")
    per_file = channels // len(paths)
    images = []
    for path in paths:
        source = source_for(path)
        image = as_channel_image(read_image(source), source.name, per_file)
        check_values(sitk.GetArrayViewFromImage(image), source.name, integer_pixels="integer" in image.GetPixelIDTypeAsString())
        images += [sitk.VectorIndexSelectionCast(image, c) for c in range(per_file)] if per_file > 1 else [image]
    return images


def body_threshold(package: ModelPackage, normalized: np.ndarray) -> float:
    """Normalised value below which a window counts as air: -500 HU in the package's CT window (which may
    clip it to the window's floor) for CT channels, else the minimum."""
    first = package.channels[0]
    if first.preset == "ct":
        return float(normalize_intensity(np.array([[[[AIR_HU]]]], np.float32), first.intensity()).item())
    return float(normalized.min())


def to_model_grid(images: list[sitk.Image], package: ModelPackage, fast: bool = False) -> tuple[np.ndarray, Geometry]:
    """All channels resampled in one pass onto a RAS grid at the package spacing (x1.5 when ``fast``)
    that covers channel 0, then normalised per channel.

    Returns (float32 (C, X, Y, Z), its geometry).
    """
    spacing = tuple(s * (FAST_SPACING_FACTOR if fast else 1.0) for s in package.spacing)
    grid = ras_grid(images[0], spacing)
    channels = [image_to_array(resample_onto(image, grid)) for image in images]
    normalized = [normalize_intensity(array, channel.intensity()) for array, channel in zip(channels, package.channels)]
    return np.concatenate(normalized), Geometry.of_image(grid)


def to_input_grid(labels: np.ndarray, geometry: Geometry, reference: sitk.Image) -> sitk.Image:
    """Nearest-neighbour resampling of an (X, Y, Z) label map onto ``reference``'s exact grid."""
    label_image = geometry.to_image(labels)
    return sitk.Resample(label_image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label_image.GetPixelID())


def register_channels(images: list[sitk.Image], events: EventLog) -> list[sitk.Image]:
    """Channels 1.. registered (rigid MI) to channel 0 and resampled onto its grid, for inputs taken
    apart in time (a CT and a PET picked as two volumes); each registration is reported."""
    aligned = [images[0]]
    for channel, image in enumerate(images[1:], 1):
        registration = register_images(images[0], image)
        events.emit("progress", stage="register", channel=channel, registration=registration.to_dict())
        aligned.append(moving_on_fixed_grid(image, images[0], registration))
    return aligned


def segment_image(images: list[sitk.Image], package: ModelPackage, options: SegmentOptions, events: EventLog) -> Segmentation:
    """The label map (and with ``options.confidence`` the confidence map) on the exact grid (size, spacing, origin,
    direction) of ``images[0]``."""
    if options.register and len(images) > 1:
        images = register_channels(images, events)
    array, geometry = to_model_grid(images, package, options.fast)
    threshold = body_threshold(package, array)
    foreground = foreground_box(array, margin=4)
    device = pick_device(options.device)
    amp = inference_dtype(device, options.precision)
    network = compiled_network(package, options.precision, events) if uses_openvino(chosen_backend(options.backend, package), device) else None
    network = package.build_network() if network is None else network

    started = time.monotonic()
    bar = tqdm(disable=not options.show_progress, unit="window", desc="segment", dynamic_ncols=True)

    def report(done: int, total: int, skipped: int) -> None:
        computed = done - skipped
        eta = (time.monotonic() - started) / computed * (total - done) if computed else None
        bar.total = total
        bar.update(done - bar.n)
        events.emit("progress", stage="inference", step=done, total=total, skipped_windows=skipped, eta_s=eta)

    run = dict(image=torch.from_numpy(array), foreground=foreground, network=network, roi=package.roi, num_classes=package.labels.num_classes,
               overlap=options.overlap, batch_size=options.batch_size, body_threshold=threshold, progress=report, confidence=options.confidence)
    try:
        prediction = sliding_window_predict(device=device, amp_dtype=amp, **run)
    except OpenVINOFailed as error:
        events.emit("warning", file=None, reason=f"{error}; segmenting with PyTorch")
        prediction = sliding_window_predict(device=device, amp_dtype=amp, **{**run, "network": package.build_network()})
    except torch.cuda.OutOfMemoryError:
        events.emit("warning", file=None, reason="the GPU ran out of memory; continuing on the CPU")
        torch.cuda.empty_cache()
        prediction = sliding_window_predict(device=torch.device("cpu"), amp_dtype=None, **run)
    finally:
        bar.close()

    del array, run
    labels = prediction.labels.numpy().astype(np.uint8 if package.labels.num_classes <= 256 else np.uint16, copy=False)
    confidence = None if prediction.confidence is None else confidence_on_input_grid(prediction.confidence.numpy(), geometry, images[0])
    return Segmentation(to_input_grid(labels, geometry, images[0]), confidence)


def voxel_counts(label_image: sitk.Image, num_classes: int) -> np.ndarray:
    """Voxels per label value, one slice at a time (a whole-volume bincount would make an int64 copy)."""
    array = sitk.GetArrayViewFromImage(label_image)  # (K, J, I)
    counts = np.zeros(max(num_classes, int(array.max()) + 1), dtype=np.int64)
    for slice_kj in array:
        counts += np.bincount(slice_kj.ravel(), minlength=counts.size)
    return counts


def overlay_window(package: ModelPackage) -> tuple[float, float] | None:
    """Display window of an overlay PNG: the soft-tissue window (HU) for CT, else None (the image's own
    1st..99th percentiles)."""
    from swinssl.overlay import SOFT_TISSUE_HU

    return SOFT_TISSUE_HU if package.channels[0].preset == "ct" else None


def check_fit(images: list[sitk.Image], names: list[str], package: ModelPackage, options: SegmentOptions, events: EventLog) -> None:
    """Warns (events) about inputs unlike what the model was trained on; raises :class:`InputMismatchError` for one that is
    certainly not its kind, unless ``options.allow_mismatch`` (then that is a warning too)."""
    report = check_input_fit(images, names, package)
    if report.mismatch and not options.allow_mismatch:
        raise InputMismatchError(report.mismatch.file, report.mismatch.reason, package.name, package.kind())
    for doubt in report.warnings + ([report.mismatch] if report.mismatch else []):
        events.emit("warning", file=doubt.file, reason=f"{doubt.reason} (the model {package.name!r} was trained on {package.kind()})")


def segment_files(inputs: list[Path], output: Path, package: ModelPackage, options: SegmentOptions, events: EventLog,
                  overlay: Path | None = None, confidence: Path | None = None, threshold: float = DEFAULT_THRESHOLD,
                  dicom_seg: Path | None = None) -> list[Path]:
    """Reads the inputs, segments them and writes ``output`` (.seg.nrrd, or .nii.gz + .json), with ``overlay`` a PNG
    of the segments over the first input (slices through their centre), with ``confidence`` the confidence map
    (float32 NRRD/NIfTI on the input grid) and each segment's mean confidence and share below ``threshold``, with
    ``dicom_seg`` a DICOM Segmentation referencing the first input, which must then be a DICOM series."""
    first = source_for(inputs[0]) if dicom_seg is not None else None
    if first is not None and not first.is_dicom:
        raise VolumeError(first.name, "is not a DICOM series: a DICOM Segmentation (--dicom-seg) references the DICOM series it was "
                                      "computed on; give the series' folder as the first --input, or leave --dicom-seg out")
    events.emit("start", task="segment", model=package.name, inputs=[str(p) for p in inputs], device=str(pick_device(options.device)),
                overlap=options.overlap, fast=options.fast)
    images = read_inputs(inputs, package)
    check_fit(images, [str(inputs[index * len(inputs) // len(images)]) for index in range(len(images))], package, options, events)
    label_image, confidence_image = segment_image(images, package, replace(options, confidence=confidence is not None), events)
    written = write_label_map(label_image, package.labels, output)
    if first is not None:
        from swinssl.labels.dicom_seg import read_source_headers, write_dicom_seg

        def warn(reason: str) -> None:
            events.emit("warning", file=first.name, reason=reason)

        headers = read_source_headers(first.dicom_files(), warn)
        dicom_seg = write_dicom_seg(label_image, package.labels, headers, dicom_seg, (package.name, package.version), warn=warn)
        written += [dicom_seg] if dicom_seg else []
    if overlay is not None:
        from swinssl.overlay import write_overlay_png

        written.append(write_overlay_png(images[0], label_image, package.labels, overlay, package.name, overlay_window(package)))
    counts = voxel_counts(label_image, package.labels.num_classes)
    present = {label.name: int(counts[label.value]) for label in package.labels.labels}
    millilitres = float(np.prod(label_image.GetSpacing())) / 1000.0
    outputs = {"segmentation": written[0], "files": written, "overlay": overlay, "confidence": confidence, "dicom_seg": dicom_seg}
    summary = {}
    if confidence_image is not None:
        written.append(write_confidence(confidence_image, confidence))
        summary = dict(confidence=confidence_summary(label_image, confidence_image, package.labels, threshold), confidence_threshold=threshold)
    volume_ml = {name: round(count * millilitres, 2) for name, count in present.items()}
    events.emit("done", outputs={k: v for k, v in outputs.items() if v is not None}, voxels_per_label=present, volume_ml=volume_ml,
                plausibility=plausibility(volume_ml, summary.get("confidence", {}), package), **summary)
    return written

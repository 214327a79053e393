"""Argument types of the command line: ranges and paths are checked while the arguments are parsed, before
torch or MONAI is imported, so a typo fails in a fraction of a second with one line naming the problem."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _number(kind: type, text: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def roi_size(text: str) -> int:
    """A window edge Swin UNETR can take: divisible by 32 (it downsamples 5 times)."""
    value = positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"must be divisible by 32 (Swin UNETR downsamples 5 times), got {value}")
    return value


def feature_size(text: str) -> int:
    """Swin UNETR's embedding size: a multiple of 12 (its attention heads are 3, 6, 12, 24)."""
    value = positive_int(text)
    if value % 12:
        raise argparse.ArgumentTypeError(f"must be a multiple of 12 (12..48 typical), got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def finite_float(text: str) -> float:
    value = _number(float, text)
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def fraction(text: str) -> float:
    """A share in [0, 1), e.g. a sliding-window overlap."""
    value = _number(float, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def tcp_port(text: str) -> int:
    value = _number(int, text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 0..65535 (0: any free port), got {value}")
    return value


def existing_folder(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return text


def existing_path(text: str) -> str:
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return text


def model_folder(text: str) -> str:
    """A model package folder, or the name of an installed model."""
    from swinssl.models import resolve_model

    try:
        return str(resolve_model(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def init_source(text: str) -> str:
    """``random``, an existing file or folder, the name of installed pretrained weights, or of an installed model."""
    if text == "random" or Path(text).exists():
        return text
    from swinssl.model_download import installed_weights
    from swinssl.models import models_dir

    weights = installed_weights(text, models_dir())
    return str(weights) if weights is not None else model_folder(text)


def _check_writable_parent(text: str) -> None:
    """The nearest existing folder above ``text`` must be a folder this user may write into (a read-only mount counts)."""
    existing = next(parent for parent in Path(text).absolute().parents if parent.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: cannot be written, {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot be written, the folder {existing} is read-only (for this user)")


def _writable_output(text: str, suffixes: tuple[str, ...]) -> str:
    """A path with one of ``suffixes`` whose folder exists or can be made (checked now, not after the work)."""
    if not text.lower().endswith(suffixes):
        raise argparse.ArgumentTypeError(f"{text}: the output must end in {', '.join(suffixes[:-1])}{' or ' if len(suffixes) > 1 else ''}{suffixes[-1]}")
    return file_output(text)


def output_folder(text: str) -> str:
    """A run's or model's ``--out`` folder: an existing folder this user can write into, or one that can be made."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file; --out is a folder (a run's or a model's)")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{text}: the folder is read-only (for this user)")
        return text
    _check_writable_parent(text)
    return text


def file_output(text: str) -> str:
    """A file to write: not a folder, not a read-only file, in a folder that exists (or can be made) and is writable."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name")
    if Path(text).exists() and not os.access(text, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: exists and is read-only")
    _check_writable_parent(text)
    return text


def segmentation_output(text: str) -> str:
    """A .seg.nrrd/.nii(.gz) segmentation path."""
    return _writable_output(text, (".seg.nrrd", ".nii", ".nii.gz"))


def png_output(text: str) -> str:
    """A .png picture path."""
    return _writable_output(text, (".png",))


def dicom_output(text: str) -> str:
    """A .dcm DICOM file path."""
    return _writable_output(text, (".dcm",))


def volume_output(text: str) -> str:
    """A .nrrd/.nii(.gz) volume path (a float map such as the confidence)."""
    return _writable_output(text, (".nrrd", ".nii", ".nii.gz"))


def backend_name(text: str) -> str:
    """``segment --backend``: auto, torch or openvino; openvino must be installed (looked up without importing it)."""
    import importlib.util

    if text == "openvino" and importlib.util.find_spec("openvino") is None:
        raise argparse.ArgumentTypeError("openvino is not installed in this Python (pip install openvino; or --backend auto or torch)")
    return text

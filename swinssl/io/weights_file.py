"""Reading weight files that may come from anywhere: only tensors are ever loaded (``weights_only=True``
or safetensors), and a refused, truncated or corrupt file gives one line that names it."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any


class WeightsFileError(ValueError):
    """A weights or checkpoint file that cannot be loaded; the message names the file."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_torch_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's message would suggest weights_only=False: never do that
        raise WeightsFileError(f"{path}: refused: it holds pickled Python objects, which could run code when loaded; "
                               "only plain tensors are accepted") from error
    except Exception as error:
        raise WeightsFileError(f"{path}: unreadable or truncated checkpoint ({_first_line(error)})") from error


def load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:
        raise WeightsFileError(f"{path}: not a readable safetensors file, truncated or corrupt ({_first_line(error)})") from error


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (empty when it has none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:
        raise WeightsFileError(f"{path}: not a readable safetensors file, truncated or corrupt ({_first_line(error)})") from error

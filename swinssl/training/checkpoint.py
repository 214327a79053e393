"""Atomic checkpoints, exact resume (including RNG states) and encoder export.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``: a checkpoint is untrusted input and never runs code.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"
ENCODER_NAME = "encoder.safetensors"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file in the same folder + fsync + rename.

    A crash or SIGKILL at any moment leaves either the old file or the new one, never a torn one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Loads a checkpoint safely (weights_only) onto the CPU."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors name the forbidden global
        raise ValueError(f"{path}: not a loadable weights-only checkpoint ({error})") from error


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain values."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state["numpy"]
    np.random.set_state(
        ("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_encoder(encoder_state: dict[str, torch.Tensor], path: Path) -> None:
    """Writes encoder weights (SwinUNETR key names, ``swinViT.*``) as safetensors, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous().cpu() for k, v in encoder_state.items()}, str(temp), metadata={"format": "swinssl-encoder"})
    os.replace(temp, path)

"""Atomic checkpoints, exact resume (including RNG states) and encoder export.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``: a checkpoint is untrusted input and never runs code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from swinssl.io.atomic import atomic_write
from swinssl.io.weights_file import load_torch_file

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"
ENCODER_NAME = "encoder.safetensors"
SWINUNETR_NAME = "swinunetr.safetensors"  # encoder + decoder of a run pretrained with --decoder swinunetr


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through :func:`swinssl.io.atomic.atomic_write`: the previous checkpoint survives any crash."""
    try:
        atomic_write(path, lambda stream: torch.save(obj, stream))
    except RuntimeError as error:  # torch reports a full disk as "enforce fail at inline_container.cc"
        raise OSError(f"could not write {path} (disk full or not writable); the previous checkpoint is kept") from error


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Loads a checkpoint safely (weights_only) onto the CPU."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return load_torch_file(path)


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


def export_encoder(encoder_state: dict[str, torch.Tensor], path: Path, provenance: dict[str, str] | None = None) -> None:
    """Writes encoder weights (SwinUNETR key names: ``swinViT.*``, with the decoder's modules for ``swinunetr.safetensors``)
    as safetensors, atomically; ``provenance``
    (patch-merging order, MONAI version) goes into the file's metadata."""
    data = save({k: v.contiguous().cpu() for k, v in encoder_state.items()}, metadata={"format": "swinssl-encoder", **(provenance or {})})
    atomic_write(path, lambda stream: stream.write(data))

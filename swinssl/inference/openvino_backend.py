"""OpenVINO runs the segmentation network on the CPU, several times faster than PyTorch there (benchmarks/RESULTS.md).

Only the network call changes: :class:`OpenVINONetwork` is a module that :func:`~swinssl.inference.sliding_window.sliding_window_predict`
calls like the PyTorch network, so window placement, Gaussian weighting, air-window skipping, the float16 logit sum,
the confidence map and progress are the same code for both backends.

The network is converted once per model (traced at a static (1, C, R, R, R) shape: SwinUNETR's window partition does
not convert with a dynamic one) and saved as OpenVINO IR in float32 under :func:`cache_root`, in a folder keyed by the
weights' SHA-256, the architecture, ROI, window batch, input channels and the OpenVINO, MONAI and swinssl versions;
the compiled network is kept by OpenVINO's model cache in one subfolder per precision. A later run loads both (about a
second) instead of converting (a minute on a small CPU). The cache keeps the :data:`CACHE_KEEP` most recently used models.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from swinssl.events import EventLog
from swinssl.io.download import file_digest
from swinssl.package import BACKENDS, WEIGHTS, ModelPackage

BACKEND_ENV = "SWINSSL_BACKEND"  # the backend where none is given (the test suite sets torch: one conversion per test model)
CACHE_ENV = "SWINSSL_OPENVINO_CACHE"
PREPARE_MESSAGE = "preparing the model for this CPU (OpenVINO; first run of this model only)"
WINDOW_BATCH = 1  # windows per OpenVINO call: the shape is static, and one window keeps all cores busy
CACHE_KEEP = 6  # converted models kept in the cache (about 0.1-0.5 GB each); the least recently used go first


class OpenVINOFailed(RuntimeError):
    """OpenVINO could not convert, compile or run the network; the caller segments with PyTorch instead."""


def openvino_installed() -> bool:
    """Whether the ``openvino`` package can be imported (looked up without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def default_backend() -> str:
    """``$SWINSSL_BACKEND`` when set, else auto (which then defers to the model package's ``backend``)."""
    return os.environ.get(BACKEND_ENV) or "auto"


def chosen_backend(requested: str, package: ModelPackage) -> str:
    """The backend a run uses: the one asked for (``--backend`` or ``$SWINSSL_BACKEND``), else the package's."""
    return requested if requested != "auto" else package.backend


def uses_openvino(backend: str, device: torch.device) -> bool:
    """``openvino``: yes (the CPU only); ``auto``: on the CPU when OpenVINO is installed; ``torch``: no."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "openvino" and device.type != "cpu":
        raise ValueError(f"--backend openvino runs on the CPU; --device asked for {device}")
    if backend == "openvino" and not openvino_installed():
        raise ValueError("--backend openvino needs the openvino package (pip install openvino)")
    return backend == "openvino" or (backend == "auto" and device.type == "cpu" and openvino_installed())


def cache_root() -> Path:
    """``$SWINSSL_OPENVINO_CACHE``, else ``$XDG_CACHE_HOME/swinssl/openvino`` (``~/.cache/swinssl/openvino``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swinssl" / "openvino"


def cache_key(package: ModelPackage) -> str:
    """What the converted network depends on, hashed: the weights, the architecture and the converting software."""
    import monai
    import openvino

    from swinssl import __version__

    parts = {"weights": file_digest(package.path / WEIGHTS, "sha256") if package.path else "random", "channels": len(package.channels),
             "classes": package.labels.num_classes, "feature_size": package.feature_size, "patch_merging": package.patch_merging,
             "roi": package.roi, "batch": WINDOW_BATCH, "openvino": openvino.get_version(), "monai": monai.__version__, "swinssl": __version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def prune_cache(root: Path, keep: int = CACHE_KEEP) -> list[Path]:
    """Removes all but the ``keep`` most recently used converted models under ``root`` (use = the folder's mtime, which
    :func:`compiled_network` touches), so that fine-tuned versions do not fill the disk. Returns the removed folders."""
    folders = sorted((f for f in root.iterdir() if f.is_dir() and not f.name.startswith(".")), key=lambda f: f.stat().st_mtime, reverse=True)
    for folder in folders[keep:]:
        shutil.rmtree(folder, ignore_errors=True)
    return folders[keep:]


def native_bf16() -> bool:
    """Whether OpenVINO computes bf16 natively on this CPU (AVX-512 BF16 or AMX)."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_precision(precision: str, events: EventLog) -> str:
    """OpenVINO's inference precision for ``--precision``: auto and fp32 -> f32 (always set: on CPUs with AMX,
    OpenVINO's own default is bf16); bf16 -> bf16 where the CPU has it, else one warning and f32."""
    if precision != "bf16":
        return "f32"
    if native_bf16():
        return "bf16"
    events.emit("warning", file=None, reason="this CPU has no native bf16 (AVX-512 BF16 or AMX): segmenting in fp32")
    return "f32"


@contextlib.contextmanager
def _no_conversion_telemetry() -> Iterator[None]:
    """OpenVINO's converter reports usage to Intel unless the user opted out (openvino 2025-2026: ``ovc.convert_impl``);
    a clinical tool sends nothing, so its telemetry is swapped for OpenVINO's own no-op stub while converting."""
    try:
        from openvino.tools.ovc import convert_impl, telemetry_stub
    except ImportError:  # another layout: nothing to swap
        yield
        return
    originals = {name: getattr(convert_impl, name) for name in ("init_ovc_telemetry", "tm") if hasattr(convert_impl, name)}
    convert_impl.init_ovc_telemetry = lambda *args, **kwargs: telemetry_stub.Telemetry()
    convert_impl.tm = telemetry_stub  # prepare_ir's own ``tm.Telemetry()``
    try:
        yield
    finally:
        for name, value in originals.items():
            setattr(convert_impl, name, value)


def convert(package: ModelPackage, folder: Path) -> None:
    """Traces the package's network at (1, C, R, R, R) and saves it as float32 IR (model.xml + model.bin) in
    ``folder``, written beside it and renamed into place (a concurrent run's finished folder wins)."""
    import openvino

    network = package.build_network()
    example = torch.zeros(WINDOW_BATCH, len(package.channels), package.roi, package.roi, package.roi)
    with _no_conversion_telemetry(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-level shape arithmetic: the shape is static
        model = openvino.convert_model(network, example_input=example, input=[list(example.shape)])
    del network
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        openvino.save_model(model, temporary / "model.xml", compress_to_fp16=False)  # the default would halve the weights
        os.replace(temporary, folder)
    except OSError:
        if not (folder / "model.xml").exists():
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


class OpenVINONetwork(torch.nn.Module):
    """The compiled network as a module: (B, C, R, R, R) float32 -> (B, K, R, R, R) float32 logits, one window per call."""

    def __init__(self, compiled) -> None:
        super().__init__()
        self.request = compiled.create_infer_request()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        logits = []
        for window in batch:
            try:
                self.request.infer([np.ascontiguousarray(window[None].numpy(), dtype=np.float32)])
            except RuntimeError as error:
                raise OpenVINOFailed(f"OpenVINO failed while running the network ({error_summary(error)})") from error
            logits.append(torch.from_numpy(self.request.get_output_tensor(0).data[0].copy()))
        return torch.stack(logits)


def error_summary(error: BaseException) -> str:
    """The error type and its last non-empty line (OpenVINO puts the source location first and the reason last)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:300]


def compiled_network(package: ModelPackage, precision: str, events: EventLog) -> OpenVINONetwork | None:
    """The package's network for ``sliding_window_predict``, converted (first run; announced as a ``progress`` event
    with stage ``prepare``) or loaded from the cache. None after one warning naming the reason when OpenVINO fails."""
    folder, converted = None, False
    try:
        import openvino

        folder = cache_root() / cache_key(package)
        converted = not (folder / "model.xml").exists()
        if converted:
            events.emit("progress", stage="prepare", message=PREPARE_MESSAGE)  # a line on stderr without a terminal (ProgressLines)
            if sys.stderr.isatty():  # beside the progress bar, which shows no stage messages
                print(PREPARE_MESSAGE, file=sys.stderr, flush=True)
            convert(package, folder)
            prune_cache(folder.parent)
        folder.touch()  # used now: pruning keeps the most recently used
        hint = openvino_precision(precision, events)
        core = openvino.Core()
        core.set_property({"CACHE_DIR": str(folder / f"compiled-{hint}")})
        compiled = core.compile_model(str(folder / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
        events.emit("progress", stage="prepare", backend="openvino", precision=hint, converted=converted)
        return OpenVINONetwork(compiled)
    except Exception as error:  # any conversion, compilation or cache failure: PyTorch runs the same windows
        events.emit("warning", file=None, reason=f"OpenVINO could not prepare the model ({error_summary(error)}); segmenting with PyTorch")
        if folder is not None and not converted:
            shutil.rmtree(folder, ignore_errors=True)  # a damaged cached model: the next run converts afresh
        return None

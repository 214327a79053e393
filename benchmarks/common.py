"""Shared pieces of the benchmarks: the machine description, repeat timing, data paths, peak memory."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Callable, TypeVar

import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CT_DIR = SHARED_DATA / "ct"
CLASSES = 14
T = TypeVar("T")


def machine() -> dict:
    """CPU model, cores torch uses, GPU (or None), torch and Python versions."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": torch.get_num_threads(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def timed(function: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median wall time of ``repeats`` calls (the caller warms up) and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def process_memory(field: str) -> int:
    """A /proc/self/status size in bytes: VmRSS (now) or VmHWM (this process's peak; unlike
    ru_maxrss it does not carry a parent's peak across exec)."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(field + ":")).split()[1]) * 1024

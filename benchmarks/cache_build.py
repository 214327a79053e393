"""Workload: building the pretraining cache from real CTs, serial vs parallel, in volumes/s.

Copies of the shared real CTs (the 512 x 512 chest CT and DICOM series, the abdomen CT) are prepared as
pretraining prepares them (RAS, resampled to 1.5 x 1.5 x 2 mm, CT window, foreground crop). Three builds
into fresh cache folders: serial (one process, one volume at a time: what rank 0 alone did before),
one process with a worker per core, and ``swinssl cache`` started as two ranks with one worker each
(start-up and imports included). Ratios are against the serial build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import CT_DIR
from swinssl.io.discovery import find_volumes
from swinssl.preprocessing.cache import PrepSettings, VolumeCache
from swinssl.preprocessing.cache_build import build_cache
from swinssl.preprocessing.intensity import IntensitySettings

SPACING = (1.5, 1.5, 2.0)
SETTINGS = PrepSettings(IntensitySettings("ct"), SPACING, min_size=(96, 96, 96))  # = swinssl cache --spacing 1.5 1.5 2 (default ROI 96)


def copy_volumes(folder: Path, copies: int) -> int:
    """``copies`` copies of each real CT (the DICOM series as folders); returns the number of volumes."""
    for index in range(copies):
        shutil.copy(CT_DIR / "chest_ct_lung1.nrrd", folder / f"chest_{index}.nrrd")
        shutil.copy(CT_DIR / "abdomen_ct_3mm.nii.gz", folder / f"abdomen_{index}.nii.gz")
        shutil.copytree(CT_DIR / "abdomen_ct_dicom_series", folder / f"series_{index}")
    return 3 * copies


def ranks_build(folder: Path, cache: Path, ranks: int) -> float:
    """Wall seconds of ``ranks`` concurrent ``swinssl cache`` processes with one worker each."""
    command = [sys.executable, "-m", "swinssl", "cache", "--data", str(folder), "--cache-dir", str(cache), "--spacing", *map(str, SPACING),
               "--cache-workers", "1", "--world-size", str(ranks)]
    started = time.perf_counter()
    processes = [subprocess.Popen(command + ["--rank", str(rank)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}) for rank in range(ranks)]
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"swinssl cache failed:\n{stderr[-2000:]}")
    return time.perf_counter() - started


def run(quick: bool) -> dict:
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="swinssl-cache-") as work:
        work = Path(work)
        folder = work / "data"
        folder.mkdir()
        volumes = copy_volumes(folder, 2 if quick else 20)
        sources, _ = find_volumes([str(folder)])
        timings = {}
        for name, workers in (("serial", 1), ("workers", cores)):
            started = time.perf_counter()
            report = build_cache(sources, SETTINGS, VolumeCache(work / name), workers=workers)
            timings[name] = time.perf_counter() - started
            if len(report.built) != volumes:
                raise RuntimeError(f"{name}: built {len(report.built)} of {volumes} volumes")
        timings["ranks"] = ranks_build(folder, work / "ranks", 2)
    rate = {name: volumes / seconds for name, seconds in timings.items()}
    return {
        "volumes": volumes, "cores": cores, "spacing": list(SPACING), "seconds": timings, "volumes_per_s": rate,
        "workers_speedup": rate["workers"] / rate["serial"], "ranks_speedup": rate["ranks"] / rate["serial"],
    }

"""Workload 4: data-parallel scaling on the CPU, 1 vs 2 ``torchrun`` processes (gloo), samples/s.

Both runs use all cores: one process with 2 threads against two processes with 1 thread each
(torchrun's default for several processes). Each process trains on ``batch`` crops per step, so
two processes see twice the samples per step.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.pretraining import copy_ct_files
from swinssl.events import read_events


def samples_per_s(processes: int, folder: Path, work: Path, quick: bool, steps: int) -> float:
    """Median samples/s over the steps after the first, from rank 0's progress events."""
    roi, feature = (32, 12) if quick else (64, 12)
    events = work / f"events-{processes}.jsonl"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "swinssl", "pretrain",
        "--data", str(folder), "--out", str(work / f"run-{processes}"), "--events", str(events), "--cache-dir", str(work / "cache"),
        "--roi", str(roi), "--feature-size", str(feature), "--batch-size", "2", "--steps", str(steps), "--spacing", "2", "2", "2",
        "--decoder", "upsample", "--device", "cpu", "--checkpoint-every", "1000",
    ]
    threads = max(1, (os.cpu_count() or 1) // processes)
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if result.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} process(es) failed:\n{result.stderr[-3000:]}")
    progress = [e for e in read_events(events) if e["event"] == "progress"][1:]
    return 2 * processes / statistics.median(e["step_s"] for e in progress)


def run(quick: bool) -> dict:
    steps = 3 if quick else 10
    with tempfile.TemporaryDirectory(prefix="swinssl-scaling-") as work:
        work = Path(work)
        folder = work / "data"
        copy_ct_files(folder)
        one = samples_per_s(1, folder, work, quick, steps)
        two = samples_per_s(2, folder, work, quick, steps)
    return {"cores": os.cpu_count(), "torch_threads_default": torch.get_num_threads(), "steps": steps,
            "samples_per_s_1_process": one, "samples_per_s_2_processes": two, "scaling": two / one}

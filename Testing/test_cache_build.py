"""The pretraining cache built in parallel: two processes with two workers each share 64 volumes, each
volume is prepared once, the arrays equal a serial build, and abandoned locks are taken over."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import write_volume
from swinssl.events import read_events
from swinssl.io.discovery import find_volumes
from swinssl.preprocessing.cache import PrepSettings, VolumeCache
from swinssl.preprocessing.cache_build import build_cache
from swinssl.preprocessing.intensity import IntensitySettings

VOLUMES = 64
SETTINGS = PrepSettings(IntensitySettings("ct"), spacing=None, min_size=(32, 32, 32))  # what `swinssl cache --roi 32` uses


@pytest.fixture(scope="module")
def data_set(tmp_path_factory):
    """64 small CT-like volumes of different sizes, spacings and origins, and one truncated file."""
    root = tmp_path_factory.mktemp("volumes")
    rng = np.random.default_rng(0)
    for index in range(VOLUMES):
        shape = tuple(int(n) for n in rng.integers(14, 30, size=3))
        array = rng.integers(-1000, 1200, size=shape).astype(np.int16)
        array[: shape[0] // 3] = -1000  # air around the body, so foreground cropping has work to do
        write_volume(root / f"case_{index:02d}.nii.gz", array, spacing=tuple(float(s) for s in rng.uniform(0.7, 3.0, 3)),
                     origin=tuple(float(o) for o in rng.uniform(-100, 100, 3)))
    broken = (root / "case_00.nii.gz").read_bytes()
    (root / "broken.nii.gz").write_bytes(broken[: len(broken) // 2])
    return root


def _usable(root):
    return [source for source in find_volumes([str(root)])[0] if source.path.name != "broken.nii.gz"]


def hold_lock(lock, seconds: float, build=None) -> subprocess.Popen:
    """Another process that holds ``lock`` for ``seconds``, then (with ``build`` = (cache folder, source)) builds the
    entry, then releases the lock; it prints "locked" once it holds it."""
    program = ["import json, os, socket, time", "from pathlib import Path", f"lock = Path({str(lock)!r})",
               "lock.write_text(json.dumps({'host': socket.gethostname(), 'pid': os.getpid(), 'time': time.time()}))",
               "print('locked', flush=True)", f"time.sleep({seconds})"]
    if build is not None:
        folder, source = build
        program += ["from swinssl.io.discovery import VolumeSource", "from swinssl.preprocessing.cache import PrepSettings, VolumeCache",
                    "from swinssl.preprocessing.intensity import IntensitySettings",
                    f"VolumeCache({str(folder)!r}).build(VolumeSource(Path({str(source.path)!r})), "
                    "PrepSettings(IntensitySettings('ct'), min_size=(32, 32, 32)))"]
    return subprocess.Popen([sys.executable, "-c", "\n".join(program + ["lock.unlink()"])], stdout=subprocess.PIPE, text=True)


def _cache_process(data, cache, rank: int, events):
    return subprocess.Popen(
        [sys.executable, "-m", "swinssl", "cache", "--data", str(data), "--cache-dir", str(cache), "--roi", "32", "--cache-workers", "2",
         "--rank", str(rank), "--world-size", "2", "--events", str(events)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_ranks_with_two_workers_each_prepare_every_volume_once_with_the_serial_arrays(tmp_path, data_set):
    sources, _ = find_volumes([str(data_set)])
    assert len(sources) == VOLUMES + 1
    serial = VolumeCache(tmp_path / "serial")
    serial_report = build_cache(sources, SETTINGS, serial, workers=1)
    assert len(serial_report.built) == VOLUMES
    assert [failure is not None for failure in serial_report.failures].count(True) == 1

    shared = tmp_path / "shared"
    processes = [_cache_process(data_set, shared, rank, tmp_path / f"events_{rank}.jsonl") for rank in (0, 1)]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-2000:]
        assert "Traceback" not in stderr
    built = [int(re.search(r"\((\d+) prepared by this process", stdout).group(1)) for stdout, _ in outputs]
    assert sum(built) == VOLUMES, built  # every volume prepared exactly once in all (how they split depends on start-up times)
    for stdout, stderr in outputs:
        assert f"{VOLUMES} volume(s) ready" in stdout and "1 file(s) skipped" in stdout
    assert "broken.nii.gz" in outputs[0][1]  # rank 0 names the unusable file, as a warning, once per run

    cache = VolumeCache(shared)
    for source in sources:
        if source.path.name == "broken.nii.gz":
            assert cache.known_failure(source, SETTINGS) is not None and not cache.is_fresh(source, SETTINGS)
            continue
        ours, reference = cache.load(source, SETTINGS), serial.load(source, SETTINGS)
        assert np.array_equal(np.asarray(ours.array), np.asarray(reference.array)), source.path.name
        assert ours.geometry == reference.geometry
    assert not list(shared.glob("*.lock")) and not list(shared.glob(".swinssl-tmp-*"))

    events = read_events(tmp_path / "events_0.jsonl")
    progress = [e for e in events if e["event"] == "cache"]
    assert progress[-1]["done"] == progress[-1]["total"] == VOLUMES + 1
    assert [e["done"] for e in progress] == sorted(e["done"] for e in progress)
    assert events[-1]["event"] == "done" and events[-1]["volumes"] == VOLUMES and events[-1]["built"] == built[0]
    assert not (tmp_path / "events_1.jsonl").exists()  # rank 1 writes no events, as in pretraining


def test_rank_1_alone_prepares_everything_without_waiting_for_rank_0(tmp_path, data_set):
    """No barrier: a rank whose peers have not started (or are slow to import torch) does all the work itself."""
    process = _cache_process(data_set, tmp_path / "cache", 1, tmp_path / "events.jsonl")
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-2000:]
    assert f"{VOLUMES} volume(s) ready" in stdout and f"({VOLUMES} prepared by this process" in stdout


def test_a_second_run_prepares_nothing_and_reports_the_known_bad_file_without_decoding_it(tmp_path, data_set):
    sources, _ = find_volumes([str(data_set)])
    cache = VolumeCache(tmp_path / "cache")
    build_cache(sources, SETTINGS, cache, workers=2)
    stamps = {path: path.stat().st_mtime_ns for path in (tmp_path / "cache").iterdir()}
    again = build_cache(sources, SETTINGS, cache, workers=2)
    assert again.built == [] and sum(f is not None for f in again.failures) == 1
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "cache").iterdir()} == stamps


def test_a_lock_left_by_a_dead_process_or_a_lost_node_is_taken_over(tmp_path, data_set):
    sources = _usable(data_set)[:3]
    cache = VolumeCache(tmp_path / "cache")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "cache" / f"{cache.key(sources[0], SETTINGS)}.lock").write_text(
        json.dumps({"host": socket.gethostname(), "pid": dead.pid, "time": time.time()}))
    lost_node = tmp_path / "cache" / f"{cache.key(sources[1], SETTINGS)}.lock"
    lost_node.write_text(json.dumps({"host": "another-node", "pid": 1, "time": time.time()}))
    old = time.time() - 120
    os.utime(lost_node, (old, old))
    report = build_cache(sources, SETTINGS, cache, workers=1, stale_after_s=60)
    assert sorted(report.built) == sorted(cache.key(s, SETTINGS) for s in sources)
    assert all(cache.is_fresh(s, SETTINGS) for s in sources)
    assert not list((tmp_path / "cache").glob("*.lock"))


def test_an_entry_held_by_a_live_process_is_waited_for_not_built_twice(tmp_path, data_set):
    """Another process holds the lock and finishes the entry a moment later: this one waits and builds nothing."""
    source = _usable(data_set)[0]
    cache = VolumeCache(tmp_path / "cache")
    lock = tmp_path / "cache" / f"{cache.key(source, SETTINGS)}.lock"
    holder = hold_lock(lock, seconds=2, build=(tmp_path / "cache", source))
    assert holder.stdout.readline().strip() == "locked"
    report = build_cache([source], SETTINGS, cache, workers=1)
    assert holder.wait(timeout=60) == 0
    assert report.built == [] and report.failures == [None] and cache.is_fresh(source, SETTINGS)


def test_an_unreadable_lock_from_another_node_is_taken_over_once_old(tmp_path, data_set):
    """A lock left empty (its process was killed between creating and writing it) falls under the age limit."""
    source = _usable(data_set)[0]
    cache = VolumeCache(tmp_path / "cache")
    lock = tmp_path / "cache" / f"{cache.key(source, SETTINGS)}.lock"
    lock.write_text("")
    old = time.time() - 120
    os.utime(lock, (old, old))
    report = build_cache([source], SETTINGS, cache, workers=1, stale_after_s=60)
    assert report.built == [cache.key(source, SETTINGS)] and not lock.exists()


def test_an_entry_whose_builder_gave_up_is_claimed_again(tmp_path, data_set):
    """The holder releases its lock without a result (its worker died, its disk was full): this process builds it."""
    source = _usable(data_set)[0]
    cache = VolumeCache(tmp_path / "cache")
    lock = tmp_path / "cache" / f"{cache.key(source, SETTINGS)}.lock"
    holder = hold_lock(lock, seconds=1.5)
    assert holder.stdout.readline().strip() == "locked"
    report = build_cache([source], SETTINGS, cache, workers=1)
    assert holder.wait(timeout=60) == 0
    assert report.built == [cache.key(source, SETTINGS)] and cache.is_fresh(source, SETTINGS)


def test_two_runs_started_at_once_on_a_fresh_cache_build_one_volume_without_a_worker_pool(tmp_path, data_set):
    """Two independent runs (both rank 0, 2 workers asked) on one fresh cache and one volume: the one that claims it
    builds it in a thread, at once, instead of first starting a pool of worker processes (seconds to minutes on a
    busy machine, while the other run waits on its lock); the other waits and builds nothing."""
    single = tmp_path / "one"
    single.mkdir()
    os.symlink(data_set / "case_01.nii.gz", single / "case_01.nii.gz")
    started = time.monotonic()
    processes = [subprocess.Popen(
        [sys.executable, "-m", "swinssl", "cache", "--data", str(single), "--cache-dir", str(tmp_path / "cache"), "--roi", "32",
         "--cache-workers", "2", "--events", str(tmp_path / f"events_{run}.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for run in (0, 1)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert all(process.returncode == 0 for process in processes), [stderr[-1500:] for _, stderr in outputs]
    logs = [read_events(tmp_path / f"events_{run}.jsonl") for run in (0, 1)]
    built = [log[-1]["built"] for log in logs]
    assert sorted(built) == [0, 1], built  # prepared once
    progress = [event for log in logs for event in log if event["event"] == "cache"]
    assert progress and all(event["workers"] == 1 for event in progress)  # no pool for a single entry
    assert time.monotonic() - started < 120

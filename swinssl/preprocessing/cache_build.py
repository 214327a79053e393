"""Builds a :class:`VolumeCache` in parallel: worker processes per rank, ranks and nodes sharing the work.

Every process (a ``torchrun`` rank, or any ``swinssl cache`` started on another node over the same
folder) claims an entry by creating ``<key>.lock`` (a hard link to a file already holding its host and
process id, so a lock is never seen empty) before building it, so no volume is decoded twice and the
ranks share the work whatever their speed. A rank starts with its own share (every ``world_size``-th
volume) and then helps with the rest. There is no collective barrier: a rank that has run out of work
waits for the entries other processes hold by polling the folder. It claims an entry again when the lock
went away without a result (the builder failed), and takes over a lock whose builder is gone: on the same
host a process that no longer runs, on another host a lock older than ``stale_after_s``. Two processes
taking over the same stale lock at the same instant may both build the entry, which is harmless (every
write is atomic). Decoding, reorienting, resampling and normalising are SimpleITK/numpy work, one volume
per worker.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from swinssl.io.discovery import VolumeSource
from swinssl.io.reader import VolumeError
from swinssl.preprocessing.cache import PrepSettings, VolumeCache

POLL_S = 0.5
STALE_AFTER_S = 1800.0  # a full-resolution CT takes well under a minute; a lock this old belongs to a lost node


@dataclass(frozen=True)
class CacheProgress:
    """Entries ready in the whole cache (any process's), of ``total``; ``built`` by this process."""

    done: int
    total: int
    built: int
    volumes_per_s: float
    eta_s: float | None
    workers: int = 1  # worker processes this process started (1: it builds in a thread, no process start-up)


@dataclass
class CacheReport:
    """Per source, in the order given: None when its entry is ready, else why it is unusable."""

    failures: list[str | None]
    built: list[str] = field(default_factory=list)  # entry keys this process built


WORKER_MEMORY = 2 * 1024**3  # a worker holds a decoded full-resolution CT and its resampled copy: 1-2 GB
MAX_WORKERS = 8


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _local_ranks() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def default_workers() -> int:
    """This node's cores divided among its ranks (``LOCAL_WORLD_SIZE`` under torchrun), at most 8, and no more
    than the available memory holds at 2 GB per worker."""
    import psutil

    by_memory = psutil.virtual_memory().available // (WORKER_MEMORY * _local_ranks())
    return int(max(1, min(MAX_WORKERS, _cores() // _local_ranks(), by_memory)))


def _build_entry(root: str, source: VolumeSource, settings: PrepSettings) -> str | None:
    """Runs in a worker: builds one entry; returns None, or the reason the source is unusable."""
    try:
        VolumeCache(root).build(source, settings)
        return None
    except VolumeError as error:
        return error.reason


def _limit_threads(threads: int) -> None:
    """A worker's share of the cores, for ITK and for torch (MONAI's padding and cropping may use it)."""
    import SimpleITK as sitk
    import torch

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    torch.set_num_threads(threads)


def _executor(workers: int) -> Executor:
    """One thread for a serial build (no start-up cost), else worker processes started by a fork server
    that has already imported the preprocessing code (a plain fork of a process holding torch threads is unsafe)."""
    if workers == 1:
        return ThreadPoolExecutor(max_workers=1)
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["swinssl.preprocessing.cache"])
    threads = max(1, _cores() // (workers * _local_ranks()))
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_limit_threads, initargs=(threads,))


class _Locks:
    """``<key>.lock`` files holding the builder's host and process id; see the module docstring."""

    def __init__(self, root: Path, stale_after_s: float) -> None:
        self.root = root
        self.stale_after_s = stale_after_s
        self.host = socket.gethostname()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.lock"

    def _record(self) -> str:
        """What a lock holds: this process's host and id, and when it claimed the entry."""
        return json.dumps({"host": self.host, "pid": os.getpid(), "time": time.time()})

    def claim(self, key: str) -> bool:
        """True when this process now holds ``key``; the lock appears whole (a hard link is created atomically)."""
        holder = self.root / f".{key}.{self.host}.{os.getpid()}.holder"
        holder.write_text(self._record())
        try:
            os.link(holder, self.path(key))
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: create exclusively, then write
            return self._claim_exclusive(key)
        finally:
            holder.unlink(missing_ok=True)

    def _claim_exclusive(self, key: str) -> bool:
        try:
            handle = os.open(self.path(key), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(handle, "w") as stream:
            stream.write(self._record())
        return True

    def release(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def is_abandoned(self, key: str) -> bool:
        """True when the builder is gone: on this host, its process no longer runs; elsewhere (or unreadable), the
        lock is older than the limit."""
        path = self.path(key)
        try:
            age = time.time() - path.stat().st_mtime
            holder = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False  # released meanwhile: the caller looks at the entry again
        except (OSError, ValueError):
            holder = {}
        if holder.get("host") == self.host and isinstance(holder.get("pid"), int):
            return not _process_alive(holder["pid"])
        return age > self.stale_after_s

    def take_over(self, key: str) -> None:
        """Removes an abandoned lock; the rename lets only one of several processes that found it remove it."""
        aside = self.root / f".{key}.{self.host}.{os.getpid()}.stale"
        try:
            os.rename(self.path(key), aside)
            aside.unlink()
        except FileNotFoundError:
            pass


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def _own_share_first(count: int, rank: int, world_size: int) -> list[int]:
    """Indices of this rank's share (every world_size-th), then the others' starting from the next rank's."""
    own = list(range(rank, count, world_size))
    others = [i for r in range(1, world_size) for i in range((rank + r) % world_size, count, world_size)]
    return own + others


def build_cache(sources: list[VolumeSource], settings: PrepSettings, cache: VolumeCache, workers: int = 1, rank: int = 0,
                world_size: int = 1, on_progress: Callable[[CacheProgress], None] | None = None,
                stale_after_s: float = STALE_AFTER_S) -> CacheReport:
    """Makes every source's entry ready (built here, or by another process), then returns.

    Raises:
        RuntimeError: a worker process died (out of memory?); the entries built so far are kept.
    """
    started = time.monotonic()
    keys = [cache.key(source, settings) for source in sources]
    locks = _Locks(cache.root, stale_after_s)
    failures: list[str | None] = [None] * len(sources)
    ready: set[int] = set()

    def settle(index: int) -> bool:
        """Marks an entry as ready when it is built, or known to be unusable; True when it is."""
        source = sources[index]
        if cache.is_fresh(source, settings):
            ready.add(index)
        elif (reason := cache.known_failure(source, settings)) is not None:
            failures[index] = reason
            ready.add(index)
        return index in ready

    todo = deque(index for index in _own_share_first(len(sources), rank, world_size) if not settle(index))
    # No more workers than entries to build: a pool's start-up (a fork server importing the preprocessing code, each
    # worker importing torch) takes seconds to minutes on a busy machine, while a small volume builds in well under
    # a second; for one entry it held the lock that a second run on the same cache waited on for minutes.
    workers = max(1, min(workers, len(todo)))
    ready_at_start = len(ready)
    built: list[str] = []
    held_elsewhere: list[int] = []
    in_flight: dict[Future, int] = {}
    last_report = (0.0, -1)  # (time, entries ready) of the last report

    def report(force: bool = False) -> None:
        """Calls ``on_progress`` when more entries are ready (at most every POLL_S), or when forced."""
        nonlocal last_report
        if on_progress is None or (not force and (len(ready) == last_report[1] or time.monotonic() - last_report[0] < POLL_S)):
            return
        last_report = (time.monotonic(), len(ready))
        new = len(ready) - ready_at_start
        rate = new / max(time.monotonic() - started, 1e-6)
        left = len(sources) - len(ready)
        on_progress(CacheProgress(len(ready), len(sources), len(built), rate, left / rate if rate > 0 else None, workers))

    report(force=True)
    executor = _executor(workers)
    try:
        while todo or in_flight or held_elsewhere:
            while todo and len(in_flight) < workers:
                index = todo.popleft()
                if not locks.claim(keys[index]):
                    held_elsewhere.append(index)
                elif settle(index):  # finished by another process since it was last looked at
                    locks.release(keys[index])
                else:
                    in_flight[executor.submit(_build_entry, str(cache.root), sources[index], settings)] = index
            if in_flight:
                finished, _ = wait(in_flight, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = in_flight.pop(future)
                    locks.release(keys[index])
                    failures[index] = future.result()
                    ready.add(index)
                    if failures[index] is None:
                        built.append(keys[index])
            elif not todo and held_elsewhere:
                time.sleep(POLL_S)
            if not todo:  # out of own work: look at the entries other processes hold
                still_held = []
                for index in held_elsewhere:
                    if settle(index):
                        continue
                    if not locks.exists(keys[index]):  # released without a result: its builder failed
                        todo.append(index)
                    elif locks.is_abandoned(keys[index]):
                        locks.take_over(keys[index])
                        todo.append(index)
                    else:
                        still_held.append(index)
                held_elsewhere = still_held
            report()
    except BrokenProcessPool as error:
        names = ", ".join(sources[i].name for i in in_flight.values())
        raise RuntimeError(f"a cache worker process died while preparing {names or 'a volume'} (out of memory? try fewer "
                           "--cache-workers); the volumes prepared so far are kept") from error
    finally:
        for index in in_flight.values():
            locks.release(keys[index])
        executor.shutdown(wait=True, cancel_futures=True)
    report(force=True)
    return CacheReport(failures, built)

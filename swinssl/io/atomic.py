"""Atomic file writes: a crash, SIGKILL or full disk at any moment leaves the old file or the new one,
never a torn one. Temporary files are named ``.swinssl-tmp-*`` beside their target, so a run can remove
the ones a killed predecessor left (:func:`remove_stale_temp_files`). Written files get the usual
permissions (0666 less the umask), so a shared models folder stays readable."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

TEMP_PREFIX = ".swinssl-tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(temp_name: str, path: Path) -> None:
    os.chmod(temp_name, 0o666 & ~_umask())
    os.replace(temp_name, path)


def _named_os_error(error: OSError, path: Path) -> OSError:
    """``[Errno 28]`` alone names no file; this says which one could not be written and why."""
    reason = error.strerror or str(error)
    blocker = next((parent for parent in Path(path).parents if parent.exists()), None)
    if blocker is not None and not blocker.is_dir():
        reason = f"{blocker} is a file, not a folder"
    return OSError(error.errno, f"could not write {path}: {reason}")


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Calls ``write(stream)`` on a temporary file in the same folder, fsyncs it, then renames it over ``path``."""
    with atomic_path(path) as temp:
        with open(temp, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` that ends like it (writers that pick the format from the
    suffix still work); on success it replaces ``path``, on any error it is removed and ``path`` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=f".{path.name}")
        os.close(handle)
    except OSError as error:
        raise _named_os_error(error, path) from error
    try:
        yield Path(temp_name)
        _publish(temp_name, path)
    except OSError as error:
        Path(temp_name).unlink(missing_ok=True)
        raise _named_os_error(error, path) from error
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Removes temporary files a killed writer left in ``folder`` (not recursive); returns them."""
    stale = sorted(Path(folder).glob(f"{TEMP_PREFIX}*")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale

"""HTTP(S) downloads that resume: a partial ``<file>.part`` is continued with a ``Range`` request, and checked
against a published hash before anything uses it."""

from __future__ import annotations

import hashlib
import http.client
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from swinssl import __version__

CHUNK = 1 << 20
TIMEOUT_S = 60.0
DownloadProgress = Callable[[int, int | None], None]  # (bytes on disk, total bytes or None when unknown)


class DownloadError(RuntimeError):
    """A download that did not complete or whose file is not the published one; the message says which and why."""


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, partial: Path, progress: DownloadProgress | None = None, timeout: float = TIMEOUT_S) -> Path:
    """Downloads ``url`` into ``partial``, continuing what is already there. Returns ``partial`` when complete.

    Raises:
        DownloadError: no connection, an HTTP error status, or a transfer that stopped early (``partial`` is
            kept, so the same call resumes it).
    """
    if not url.startswith(("https://", "http://")):
        raise DownloadError(f"{url}: only http:// and https:// addresses are downloaded")
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"swinssl/{__version__}", **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left after what we have: complete (the hash decides)
            return partial
        raise DownloadError(f"{url}: the server answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, socket.timeout, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"{url}: could not connect ({reason})") from None
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server sends the whole file: start again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        received = have
        try:
            with open(partial, "ab" if resumed else "wb") as sink:
                while chunk := response.read(CHUNK):
                    sink.write(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, total)
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as error:
            raise DownloadError(f"{url}: the transfer stopped after {received} of {total or '?'} bytes ({type(error).__name__}); "
                                "run the same command again to resume it") from None
    if total is not None and received < total:
        raise DownloadError(f"{url}: the transfer stopped after {received} of {total} bytes; run the same command again to resume it")
    return partial

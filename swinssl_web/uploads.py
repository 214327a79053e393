"""Files uploaded from the browser: received in chunks into a private temporary folder (mode 0700),
with a size limit, under their base names only; removed once loaded, when the next upload starts and at exit. The
folder's name holds the server's process id: a server that starts removes the folders of servers that died (a crash
runs no clean-up)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psutil

PREFIX = "swinssl-web-upload-"
PART_BYTES = 4_000_000  # the browser sends files in slices of this size: progress per slice, each websocket message small


class UploadTooLarge(ValueError):
    pass


class UploadInbox:
    """One upload at a time: :meth:`begin` (a fresh folder), :meth:`add_part` per slice of a file, :meth:`files`,
    :meth:`clear`. The browser sends each file in slices (its progress is shown per slice), each with its offset."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.folder: Path | None = None
        self.received = 0
        self.targets: dict[int, Path] = {}  # the browser's file index -> where its slices are written
        remove_abandoned_uploads()

    def begin(self) -> None:
        self.clear()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))

    def add_part(self, index: int, offset: int, part: dict) -> None:
        """Writes ``part`` (a trame client file: name, content) at ``offset`` of the upload's file number ``index``;
        offset 0 starts that file. Slices come in order: a gap or a repeat is refused."""
        name = Path(str(part.get("name") or "upload")).name or "upload"  # a base name: no folder of the client's
        if self.folder is None:
            raise ValueError("the upload was not started (reload the page and try again)")
        if part.get("error"):  # the browser could not read it (trame sends the FileReader's message, no content)
            self.clear()
            raise ValueError(f"{name}: the browser could not read the file ({part['error']})")
        content = part.get("content") or b""
        if isinstance(content, list):
            content = b"".join(content)
        self.received += len(content)
        if self.received > self.limit_bytes:
            self.clear()
            raise UploadTooLarge(f"{name}: the upload is larger than the server's limit of {self.limit_bytes / 1e6:.0f} MB")
        if offset == 0:
            target, number = self.folder / name, 1
            while target.exists():  # the same name from two sub-folders of an uploaded folder
                target, number = self.folder / f"{number}_{name}", number + 1
            self.targets[int(index)] = target
            target.write_bytes(content)
            return
        target = self.targets.get(int(index))
        if target is None or target.stat().st_size != offset:
            self.clear()
            raise ValueError(f"{name}: a part of the file was lost on the way (upload it again)")
        with target.open("ab") as sink:
            sink.write(content)

    def files(self) -> list[Path]:
        return sorted(self.folder.iterdir()) if self.folder else []

    def clear(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder, self.received, self.targets = None, 0, {}


def remove_abandoned_uploads() -> list[Path]:
    """Removes this user's upload folders whose server process is gone; returns them."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = folder.name.removeprefix(PREFIX).split("-")[0]
        others = hasattr(os, "getuid") and folder.stat().st_uid != os.getuid()
        if not owner.isdigit() or others or psutil.pid_exists(int(owner)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed

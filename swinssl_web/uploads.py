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


class UploadTooLarge(ValueError):
    pass


class UploadInbox:
    """One upload at a time: :meth:`begin` (a fresh folder), :meth:`add` per chunk, :meth:`files`, :meth:`clear`."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.folder: Path | None = None
        self.received = 0
        remove_abandoned_uploads()

    def begin(self) -> None:
        self.clear()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))

    def add(self, files: list[dict]) -> None:
        """Writes ``files`` (trame client files: name, size, content) into the folder :meth:`begin` made."""
        if self.folder is None:
            raise ValueError("the upload was not started (reload the page and try again)")
        for file in files:
            if file.get("error"):  # the browser could not read it (trame sends the FileReader's message, no content)
                self.clear()
                raise ValueError(f"{Path(str(file.get('name', 'upload'))).name}: the browser could not read the file ({file['error']})")
            content = file.get("content") or b""
            if isinstance(content, list):
                content = b"".join(content)
            self.received += len(content)
            if self.received > self.limit_bytes:
                name = Path(str(file.get("name", "upload"))).name
                self.clear()
                raise UploadTooLarge(f"{name}: the upload is larger than the server's limit of {self.limit_bytes / 1e6:.0f} MB")
            name = Path(str(file.get("name") or "upload")).name or "upload"  # a base name: no folder of the client's
            target, index = self.folder / name, 1
            while target.exists():  # the same name from two sub-folders of an uploaded folder
                target, index = self.folder / f"{index}_{name}", index + 1
            target.write_bytes(content)

    def files(self) -> list[Path]:
        return sorted(self.folder.iterdir()) if self.folder else []

    def clear(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder, self.received = None, 0


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

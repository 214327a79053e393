"""Files uploaded from the browser: received in chunks into a private temporary folder (mode 0700),
with a size limit, under their base names only; removed once loaded, when the next upload starts and at exit."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


class UploadTooLarge(ValueError):
    pass


class UploadInbox:
    """One upload at a time: :meth:`begin` (a fresh folder), :meth:`add` per chunk, :meth:`files`, :meth:`clear`."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.folder: Path | None = None
        self.received = 0

    def begin(self) -> None:
        self.clear()
        self.folder = Path(tempfile.mkdtemp(prefix="swinssl-web-upload-"))

    def add(self, files: list[dict]) -> None:
        """Writes ``files`` (trame client files: name, size, content) into the folder :meth:`begin` made."""
        if self.folder is None:
            raise ValueError("the upload was not started (reload the page and try again)")
        for file in files:
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

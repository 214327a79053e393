"""Server-side folders the browser may look into: only the ``--data`` roots and what lies inside them.

Every path the page sends is resolved (``..`` and symlinks followed) before use and refused when the
result is outside every root, so neither ``../`` nor a symlink planted in a root reaches other files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from swinssl.io.discovery import VOLUME_SUFFIXES

LISTED_SUFFIXES = (*VOLUME_SUFFIXES, ".dcm")


class OutsideDataRoots(PermissionError):
    """A path the page asked for resolves outside every data root."""


@dataclass(frozen=True)
class Entry:
    name: str
    path: str  # resolved, inside a root
    is_folder: bool


class DataRoots:
    """The ``--data`` folders (resolved once) and the only paths the page may use: inside them."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [Path(root).resolve(strict=True) for root in roots]

    def resolve(self, path: str | Path) -> Path:
        """The real path of ``path`` (which must exist) when it is inside a root; OutsideDataRoots otherwise."""
        candidate = Path(path)
        if not candidate.is_absolute():
            raise OutsideDataRoots(f"{path}: not a path inside the server's data folders")
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            raise FileNotFoundError(f"{path}: no such file or folder on the server") from None
        if not any(real.is_relative_to(root) for root in self.roots):  # a root itself included
            raise OutsideDataRoots(f"{path}: outside the server's data folders (refused)")
        return real

    def list(self, folder: str | Path | None = None) -> list[Entry]:
        """The roots (``folder`` None), or the sub-folders and volume files of ``folder``, folders first;
        entries whose real path leaves the roots (symlinks) are left out."""
        if folder is None:
            return [Entry(root.name or str(root), str(root), True) for root in self.roots]
        entries = []
        for child in sorted(self.resolve(folder).iterdir(), key=lambda p: (not p.is_dir(), p.name.lower())):
            try:
                real = self.resolve(child)
            except (OutsideDataRoots, FileNotFoundError):
                continue
            if real.is_dir() or child.name.lower().endswith(LISTED_SUFFIXES):
                entries.append(Entry(child.name, str(real), real.is_dir()))
        return entries

    def parent(self, folder: str | Path) -> str | None:
        """The folder above ``folder`` while it is still inside a root; None at a root (go back to the list)."""
        real = self.resolve(folder)
        return None if real in self.roots else str(real.parent)

    def check_tree(self, folder: Path) -> None:
        """Refuses a folder (OutsideDataRoots) in which a symbolic link leads outside the roots: the engine reads
        every volume under it, links to files included."""
        for parent, folders, files in os.walk(folder):
            for name in folders + files:
                path = Path(parent) / name
                if path.is_symlink():
                    try:
                        self.resolve(path)
                    except (OutsideDataRoots, FileNotFoundError):
                        raise OutsideDataRoots(f"{path.relative_to(folder)} in {folder.name}: a link that leads outside "
                                               "the server's data folders (refused)") from None

    def volume_location(self, path: str | Path) -> Path:
        """What to read for ``path``: the file itself, or a folder whose files (a DICOM series, volume files) are read
        as the engine reads a folder; a link among those files that leads outside the roots is refused."""
        real = self.resolve(path)
        if real.is_file():
            return real
        files = [p for p in real.iterdir() if p.is_file() and not p.name.startswith(".")]
        if not files:
            raise FileNotFoundError(f"{real.name}: the folder holds no files")
        for file in files:
            self.resolve(file)
        return real

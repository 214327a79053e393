"""Zip archives (Slicer .mrb bundles, downloaded models) extracted without letting a member leave its folder."""

from __future__ import annotations

import zipfile
from pathlib import Path


class ArchiveError(ValueError):
    """An archive that is not a zip, or whose member would be written outside the extraction folder."""


def safe_extract(archive: Path, target: Path) -> list[Path]:
    """Extracts a zip archive into ``target``, refusing any member whose path would leave it (``../``, absolute
    paths); symbolic links are skipped. Returns the files written, sorted."""
    target = target.resolve()
    target.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                destination = (target / member.filename).resolve()
                if destination != target and target not in destination.parents:
                    raise ArchiveError(f"{archive}: member {member.filename!r} would be written outside the extraction folder; refused")
                if member.is_dir() or member.external_attr >> 16 & 0o170000 == 0o120000:  # folders; symlinks are skipped
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, destination.open("wb") as sink:
                    while chunk := source.read(1 << 20):
                        sink.write(chunk)
    except zipfile.BadZipFile as error:
        raise ArchiveError(f"{archive}: not a valid zip archive ({error})") from error
    return sorted(p for p in target.rglob("*") if p.is_file())

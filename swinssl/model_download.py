"""``swinssl models download NAME``: a catalogue entry downloaded (resumably), checked against its published hash
and installed atomically into the models folder: a package for segmentation models, a weights folder for
pretrained encoders (``finetune --init NAME``).

Partial downloads wait in ``<models>/.downloads/``; an install is staged in a temporary folder beside the
target and renamed into place, so the models folder never shows a half-installed model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from swinssl.catalogue import CatalogueEntry
from swinssl.io.archive import safe_extract
from swinssl.io.atomic import atomic_write_text
from swinssl.io.download import DownloadError, DownloadProgress, download, file_digest
from swinssl.package import MODEL_JSON

WEIGHTS_JSON = "weights.json"  # marks an installed weights folder (pretrained encoder) in the models folder
DOWNLOADS = ".downloads"


def installed_weights(reference: str, root: Path) -> Path | None:
    """The weights file of an installed pretrained encoder named ``reference``, else None."""
    meta = root / reference / WEIGHTS_JSON
    if not meta.is_file():
        return None
    return meta.parent / json.loads(meta.read_text(encoding="utf-8"))["file"]


def download_model(entry: CatalogueEntry, root: Path, progress: DownloadProgress | None = None, allow_unverified: bool = False) -> Path:
    """Downloads, verifies and installs ``entry`` as ``root/<name>``; returns that folder.

    Raises:
        DownloadError: the download failed or the file is not the published one (then nothing is installed).
        ValueError: already installed, no published hash without ``allow_unverified``, or an unusable archive.
    """
    target = entry.installed_folder(root)
    if target.exists():
        raise ValueError(f"{entry.name} is already installed in {target}; remove that folder to install it again")
    if entry.hash_algorithm is None and not allow_unverified:
        raise ValueError(f"{entry.name}: its source publishes no hash, so the download cannot be verified; "
                         "give --allow-unverified to install it anyway (its SHA-256 is recorded)")
    partial = root / DOWNLOADS / f"{entry.file_name}.part"
    download(entry.url, partial, progress)
    received = partial.stat().st_size
    if entry.size is not None and received != entry.size:
        partial.unlink()
        raise DownloadError(f"{entry.url}: {received} bytes received, the catalogue says {entry.size}; the file was deleted and "
                            "nothing was installed")
    algorithm = entry.hash_algorithm or "sha256"
    digest = file_digest(partial, algorithm)
    if entry.hash_value is not None and digest != entry.hash_value:
        partial.unlink()
        raise DownloadError(f"{entry.url}: its {algorithm.upper()} is {digest}, but the catalogue says {entry.hash_value}: not the "
                            "published file; it was deleted and nothing was installed")
    provenance = {"catalogue_name": entry.name, "url": entry.url, "hash": {"algorithm": algorithm, "value": digest,
                  "verified": entry.hash_value is not None}, "licence": entry.licence, "citation": entry.citation, "source": entry.source}
    staging = Path(tempfile.mkdtemp(prefix=".swinssl-tmp-install-", dir=root))
    try:
        installed = _install(entry, partial, staging, provenance)
        installed.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    partial.unlink(missing_ok=True)
    return target


def _install(entry: CatalogueEntry, downloaded: Path, staging: Path, provenance: dict) -> Path:
    """Builds the installed folder inside ``staging``; returns it."""
    if entry.format == "ssl-weights":
        return _install_weights(entry, downloaded, staging / entry.name, provenance)
    from swinssl.models import import_model
    from swinssl.package import load_package

    files = safe_extract(downloaded, staging / "extracted")
    if entry.format == "monai-bundle":  # <bundle>/configs/metadata.json
        folders = sorted({f.parent.parent for f in files if f.name == "metadata.json" and f.parent.name == "configs"})
    else:  # <package>/model.json
        folders = sorted({f.parent for f in files if f.name == MODEL_JSON})
    if len(folders) != 1:
        kind = "MONAI bundle (configs/metadata.json)" if entry.format == "monai-bundle" else "model package (model.json)"
        raise ValueError(f"{entry.url}: the archive holds {len(folders)} {kind} folders; expected one")
    folder = import_model(folders[0], staging / "packages", entry.name)
    package = load_package(folder)
    package.training = {**package.training, "download": provenance}
    package.write_metadata()
    return folder


def _install_weights(entry: CatalogueEntry, downloaded: Path, folder: Path, provenance: dict) -> Path:
    """A weights folder: the file as published and ``weights.json``; refused unless it loads safely as a known layout."""
    from swinssl.weights import read_weights

    folder.mkdir(parents=True)
    weights = folder / entry.file_name
    shutil.copyfile(downloaded, weights)
    source = read_weights(weights)  # weights_only loading; names the layout or refuses
    atomic_write_text(folder / WEIGHTS_JSON, json.dumps({"name": entry.name, "title": entry.title, "file": weights.name,
                                                         "layout": source.layout, **provenance}, indent=2))
    return folder

"""The model catalogue: downloadable models and pretrained weights, with where each fact about them came from.

A catalogue is a JSON list of entries. Required: ``name``, ``url``, ``format`` (``monai-bundle``: a zip of a
MONAI model-zoo bundle; ``swinssl-package``: a zip of a package folder; ``ssl-weights``: a weights file for
``finetune --init``), ``licence``, ``source``, and a hash: ``sha256``, or ``hash`` {``algorithm``, ``value``}
with the algorithm the source publishes (``sha1`` for model-zoo zips), or ``hash: null`` where none is
published (installing it then needs an explicit ``--allow-unverified``). Optional: ``title``, ``task``,
``modality``, ``segments``, ``size`` (bytes), ``citation``. The built-in catalogue is ``resources/catalogue.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

BUILT_IN = Path(__file__).parent / "resources" / "catalogue.json"
FORMATS = ("monai-bundle", "swinssl-package", "ssl-weights")
HASH_ALGORITHMS = ("sha256", "sha1", "md5")
REQUIRED = ("name", "url", "format", "licence", "source")


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    url: str
    format: str
    licence: str
    source: str
    hash_algorithm: str | None = None  # None: the source publishes no hash
    hash_value: str | None = None
    size: int | None = None
    title: str = ""
    task: str = ""
    modality: str = ""
    segments: tuple[str, ...] = field(default_factory=tuple)
    citation: str = ""

    def verification(self) -> str:
        """How the download is checked: "SHA256 checked", or "no published hash"."""
        return f"{self.hash_algorithm.upper()} checked" if self.hash_algorithm else "no published hash"

    def installed_folder(self, models_root: Path) -> Path:
        """Where it is (or would be) installed: ``<models>/<name>``."""
        return Path(models_root) / self.name

    @property
    def file_name(self) -> str:
        """The downloaded file's name: the URL's last part."""
        return self.url.rstrip("/").rsplit("/", 1)[-1] or f"{self.name}.download"


def _entry(raw: dict, where: str) -> CatalogueEntry:
    missing = [key for key in REQUIRED if not raw.get(key)]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    if raw["format"] not in FORMATS:
        raise ValueError(f"{where}: format {raw['format']!r} is not one of {', '.join(FORMATS)}")
    if not str(raw["url"]).startswith(("https://", "http://")):
        raise ValueError(f"{where}: the url must start with https:// or http://")
    if "sha256" in raw:
        algorithm, value = "sha256", raw["sha256"]
    elif "hash" in raw:
        published = raw["hash"]
        algorithm, value = (published["algorithm"].lower(), published["value"]) if published else (None, None)
    else:
        raise ValueError(f"{where}: give sha256, or hash {{algorithm, value}}, or hash null when none is published")
    if algorithm is not None and (algorithm not in HASH_ALGORITHMS or not value):
        raise ValueError(f"{where}: hash algorithm must be one of {', '.join(HASH_ALGORITHMS)}, with a value")
    return CatalogueEntry(
        name=raw["name"], url=raw["url"], format=raw["format"], licence=raw["licence"], source=raw["source"],
        hash_algorithm=algorithm, hash_value=value.lower() if value else None, size=raw.get("size"), title=raw.get("title", ""),
        task=raw.get("task", ""), modality=raw.get("modality", ""), segments=tuple(raw.get("segments", ())), citation=raw.get("citation", ""))


def load_catalogue(path: Path | None = None) -> list[CatalogueEntry]:
    """The entries of ``path`` (default: the built-in catalogue). Raises ValueError naming the file and entry."""
    path = Path(path) if path else BUILT_IN
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable catalogue ({error})") from error
    if not isinstance(raw, list):
        raise ValueError(f"{path}: a catalogue is a JSON list of entries")
    return [_entry(item, f"{path}: entry {index + 1} ({item.get('name', 'no name')})") for index, item in enumerate(raw)]


def find_entry(name: str, entries: list[CatalogueEntry]) -> CatalogueEntry:
    match = next((entry for entry in entries if entry.name == name), None)
    if match is None:
        raise ValueError(f"{name}: not in the catalogue (available: {', '.join(entry.name for entry in entries) or 'none'})")
    return match

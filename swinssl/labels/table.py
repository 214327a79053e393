"""A model's label table: value, name, RGB colour and (optional) Slicer terminology per class; and the
{value: name} tables that come with label maps (JSON or CSV)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Label:
    """One foreground class; ``color`` is RGB in 0..1; ``terminology`` a Slicer terminology dict."""

    value: int
    name: str
    color: tuple[float, float, float]
    terminology: dict | None = None

    @property
    def key(self) -> str:
        """Names match case-insensitively, ignoring surrounding blanks and '_' vs ' '."""
        return normalize_name(self.name)


def plain_name(name: str) -> str:
    """Lower case, '_' as a blank, blanks collapsed."""
    return " ".join(name.replace("_", " ").lower().split())


def normalize_name(name: str) -> str:
    """The key names match by: :func:`plain_name`, with the synonyms of a structure the anatomy table knows as one
    ('kidney_right' == 'Right Kidney'; the BTCV bundle's 'Left Kideny' == 'left kidney')."""
    from swinssl.labels.anatomy import SLICER_NAMES  # imported here: the anatomy table is built with plain_name

    plain = plain_name(name)
    return plain_name(SLICER_NAMES.get(plain, plain))


def palette_color(index: int) -> tuple[float, float, float]:
    """A distinct colour for class ``index`` (1-based) when the source gives none (tab20, cycled)."""
    from matplotlib import colormaps  # imported here: reading a label table stays light (Slicer lists models without it)

    r, g, b, _ = colormaps["tab20"]((index - 1) % 20)
    return (round(float(r), 4), round(float(g), 4), round(float(b), 4))


@dataclass
class LabelTable:
    """Foreground labels 1..K in order (0 is background and is not listed)."""

    labels: list[Label] = field(default_factory=list)

    def __post_init__(self) -> None:
        values = [label.value for label in self.labels]
        if values != list(range(1, len(values) + 1)):
            raise ValueError(f"label values must be 1..K in order, got {values}")
        keys = [label.key for label in self.labels]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate label names: {duplicates}")

    @classmethod
    def from_names(cls, names: list[str], colors: dict[str, tuple] | None = None, terminology: dict[str, dict] | None = None) -> LabelTable:
        """Colours and terminology as given, else for known anatomy Slicer's colour and SNOMED CT codes
        (:mod:`swinssl.labels.anatomy`), else a palette colour and no terminology."""
        from swinssl.labels.anatomy import standard_anatomy

        colors = {normalize_name(k): v for k, v in (colors or {}).items()}
        terminology = {normalize_name(k): v for k, v in (terminology or {}).items()}
        labels = []
        for value, name in enumerate(names, start=1):
            standard_color, standard_terminology = standard_anatomy(name) or (palette_color(value), None)
            labels.append(Label(value, name, tuple(colors.get(normalize_name(name), standard_color)),
                                terminology.get(normalize_name(name), standard_terminology)))
        return cls(labels)

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def num_classes(self) -> int:
        """Output channels of a segmentation network: K foreground classes + background."""
        return len(self.labels) + 1

    def value_of(self, name: str) -> int | None:
        key = normalize_name(name)
        return next((label.value for label in self.labels if label.key == key), None)

    def to_list(self) -> list[dict]:
        return [{k: v for k, v in asdict(label).items() if v is not None} for label in self.labels]

    @classmethod
    def from_list(cls, items: list[dict]) -> LabelTable:
        """A stored table; known anatomy stored without terminology (older packages) gets its SNOMED CT codes."""
        from swinssl.labels.anatomy import standard_anatomy

        return cls([Label(int(i["value"]), str(i["name"]), tuple(i["color"]), i.get("terminology") or (standard_anatomy(i["name"]) or (None, None))[1])
                    for i in items])


NAME_TABLE_SUFFIXES = (".json", ".csv", ".tsv", ".txt", ".lut", ".ctbl")


def read_names_file(path: Path) -> dict[int, str]:
    """{value: name} (background 0 dropped) from a names table as atlases and datasets ship them:

    - JSON: {"1": "liver"}, {"liver": 1} (nnU-Net v2), or {"labels": {...} or [{"value": 1, "name": "liver"}, ...]};
    - text (.csv, .tsv, .txt, Slicer colour tables, FreeSurfer LUTs): one label a line, value then name, separated
      by a comma, semicolon, tab or blanks; further columns (a code, a colour) are ignored, and so are a header
      line, blank lines and ``#`` comments.

    Raises:
        ValueError: naming the file and the line, for anything else.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; a names table is JSON ({{\"1\": \"liver\"}}) or CSV (value,name per line)") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        return _names_from_json(path, text)
    names: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [cell.strip().strip('"') for cell in re.split(r"[,;\t]" if re.search(r"[,;\t]", line) else r"\s+", line)]
        value, name = (cells + [""])[:2]
        if not value.lstrip("-").isdigit():
            if not names:  # a header line (value,name)
                continue
            raise ValueError(f"{path}, line {number}: {line[:60]!r} does not start with a label value; "
                             "a names table has one 'value,name' line per label (or is JSON)")
        if not name:
            raise ValueError(f"{path}, line {number}: label {value} has no name")
        names[int(value)] = name
    if not names:
        raise ValueError(f"{path}: no 'value,name' line found; a names table is CSV (value,name per line) or JSON ({{\"1\": \"liver\"}})")
    return {value: name for value, name in names.items() if value != 0}


def _names_from_json(path: Path, text: str) -> dict[int, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    if isinstance(data, dict) and "labels" in data:
        data = data["labels"]
    if isinstance(data, list):
        try:
            data = {str(int(item["value"])): str(item["name"]) for item in data}
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"{path}: a list of labels needs a 'value' and a 'name' in every entry") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a {{value: name}} mapping")
    from swinssl.finetune.cases import names_from_mapping  # the one reading of MSD / nnU-Net mappings

    names = names_from_mapping(data)
    if not names:
        raise ValueError(f"{path}: no {{value: name}} pairs in it")
    return names

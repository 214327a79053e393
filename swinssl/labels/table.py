"""A model's label table: value, name, RGB colour and (optional) Slicer terminology per class."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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


def normalize_name(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


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

"""JSON round trip for settings dataclasses (run configs saved beside their outputs)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TypeVar

from swinssl.io.atomic import atomic_write_text

T = TypeVar("T", bound="JsonSettings")


class JsonSettings:
    """Mixin for dataclasses: ``to_dict``, ``from_dict`` (unknown keys ignored), ``save`` and ``load``."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict) -> T:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls: type[T], path: Path) -> T:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

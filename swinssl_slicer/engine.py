"""Where the ``swinssl`` engine is, and whether this Python can run it: requirements checked by installed
version (``importlib.metadata``), never by importing torch or MONAI."""

from __future__ import annotations

import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

# The engine's runtime requirements: pyproject.toml's ``dependencies`` (a test keeps the two equal).
ENGINE_REQUIREMENTS = (
    "torch>=2.4",
    "monai>=1.5",  # lower bound only: shared with other extensions (README, In 3D Slicer: MONAI)
    "einops>=0.7",
    "SimpleITK>=2.3",
    "nibabel>=5.0",
    "numpy>=1.24",
    "safetensors>=0.4",
    "matplotlib>=3.7",
    "tqdm>=4.60",
    "slicerio>=1.1",
    "scipy>=1.10",
    "psutil>=5.9",
    "packaging>=21",
    "openvino>=2025.0",  # the CPU inference backend (wheels for Linux, Windows and macOS, x86-64 and ARM)
)
TORCH_REQUIREMENT = next(r for r in ENGINE_REQUIREMENTS if r.startswith("torch"))


@dataclass(frozen=True)
class UnmetRequirement:
    requirement: str
    found: str | None  # installed version, None when not installed

    @property
    def name(self) -> str:
        return Requirement(self.requirement).name

    def __str__(self) -> str:
        return f"{self.requirement} (installed: {self.found})" if self.found else f"{self.requirement} (not installed)"


def engine_root() -> Path:
    """The folder holding ``swinssl``: the one holding this package too, in a source checkout (the
    repository root) and in an installed extension (``qt-scripted-modules``)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "swinssl" / "__init__.py").is_file():
        raise ImportError(f"the swinssl engine was not found in {root}")
    return root


def ensure_engine_on_path() -> Path:
    root = engine_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def engine_process():
    """The engine's runner class (:class:`swinssl.runner.EngineProcess`), imported when a run starts: it needs psutil,
    one of the engine's requirements, while listing models and the catalogue needs none."""
    ensure_engine_on_path()
    from swinssl.runner import EngineProcess

    return EngineProcess


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def unmet_requirements(requirements: tuple[str, ...] = ENGINE_REQUIREMENTS) -> list[UnmetRequirement]:
    """Requirements that are missing or installed at a version outside their range."""
    unmet = []
    for text in requirements:
        requirement = Requirement(text)
        found = installed_version(requirement.name)
        if found is None or not requirement.specifier.contains(found, prereleases=True):
            unmet.append(UnmetRequirement(text, found))
    return unmet


def stale_imports(requirements: tuple[str, ...] = ENGINE_REQUIREMENTS) -> list[str]:
    """Packages this process imported before a different version was installed: the process must be
    restarted before it can use them (the engine subprocess is not affected)."""
    stale = []
    for text in requirements:
        name = Requirement(text).name
        module = sys.modules.get(name)
        imported = getattr(module, "__version__", None) if module is not None else None
        found = installed_version(name)
        if imported is not None and found is not None and str(imported).split("+")[0] != found.split("+")[0]:
            stale.append(f"{name} (running {imported}, installed {found})")
    return stale

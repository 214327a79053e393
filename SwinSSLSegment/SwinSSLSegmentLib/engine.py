"""Makes the ``swinssl`` engine importable inside Slicer (bundled with the extension, or a source checkout)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REQUIRED_PACKAGES = {"torch": "torch", "monai": "monai>=1.5", "SimpleITK": "SimpleITK", "safetensors": "safetensors",
                     "einops": "einops", "slicerio": "slicerio", "scipy": "scipy", "matplotlib": "matplotlib", "tqdm": "tqdm", "nibabel": "nibabel"}


def engine_root() -> Path:
    """The folder holding the ``swinssl`` package: next to the modules when installed, the repository root in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent, here.parent.parent):
        if (candidate / "swinssl" / "__init__.py").is_file():
            return candidate
    raise ImportError(f"the swinssl engine was not found next to {here}")


def ensure_engine_on_path() -> Path:
    root = engine_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def missing_packages() -> list[str]:
    """pip requirement strings of the engine's dependencies that this Python cannot import."""
    return [requirement for module, requirement in REQUIRED_PACKAGES.items() if importlib.util.find_spec(module) is None]

"""Shared fixtures: real data from ../shared/data, tiny synthetic volumes, subprocess helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# Segmentation defaults to PyTorch in the suite (engine subprocesses inherit it): OpenVINO would convert every test's
# model once (a minute each on 2 cores); test_segmentation.py asks for OpenVINO explicitly.
os.environ.setdefault("SWINSSL_BACKEND", "torch")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real CT/MR volumes; in CI (CI=true) their absence is a failure, elsewhere a skip."""
    if not (SHARED_DATA / "ct").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing; CI must run with ../shared beside the repository")
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def write_volume(path: Path, array_kji: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> Path:
    """Writes a (K, J, I) numpy array as an image file with the given geometry."""
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def phantom_ct(shape_kji=(40, 48, 44), seed: int = 0) -> np.ndarray:
    """A CT-like int16 phantom: air (-1000 HU) around a soft-tissue ellipsoid with a bright 'bone'."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape_kji, dtype=float)
    centre = [(n - 1) / 2 for n in shape_kji]
    radius = [n * 0.4 for n in shape_kji]
    inside = sum(((a - c) / r) ** 2 for a, c, r in zip((k, j, i), centre, radius)) <= 1
    volume = np.full(shape_kji, -1000.0)
    volume[inside] = 40 + rng.normal(0, 20, inside.sum())
    volume[inside & (np.abs(i - centre[2]) < 3) & (np.abs(j - centre[1]) < 3)] = 700
    return volume.astype(np.int16)


@pytest.fixture
def ct_phantom_file(tmp_path: Path) -> Path:
    return write_volume(tmp_path / "phantom_ct.nii.gz", phantom_ct(), spacing=(2.0, 2.0, 2.5))


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs ``python -m swinssl ARGS`` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "swinssl", *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


TINY_MODEL = ["--roi", "32", "--feature-size", "12", "--projection-dim", "32", "--device", "cpu"]


@pytest.fixture
def mrml_scene():
    """A real MRML scene (slicer-core) with the colors, volumes, segmentations and subject-hierarchy
    logics wired as Slicer wires them, exposed as ``slicer.mrmlScene`` and ``slicer.modules.*.logic()``."""
    import types

    import slicer

    scene = slicer.vtkMRMLScene()
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLScene(scene)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    hierarchy.SetMRMLScene(scene)
    previous = getattr(slicer, "mrmlScene", None), getattr(slicer, "modules", None)
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(**{name: types.SimpleNamespace(logic=lambda logic=logic: logic) for name, logic in
                                              (("colors", colors), ("volumes", volumes), ("segmentations", segmentations), ("subjecthierarchy", hierarchy))})
    yield scene
    scene.Clear(True)
    slicer.mrmlScene, slicer.modules = previous


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium under Playwright (the web app's tests); see web_harness.require_browser."""
    from web_harness import CHROMIUM, require_browser

    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser page whose requests may only go to 127.0.0.1; the test fails if the app asked elsewhere."""
    from web_harness import block_outside_requests

    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    blocked = block_outside_requests(page)
    page.set_default_timeout(30_000)
    yield page
    context.close()
    assert blocked == [], blocked

"""The catalogue entry ``SwinSSL.json`` and the top-level ``CMakeLists.txt`` as the Slicer Extensions Index checks them.

Rules read in Slicer/ExtensionsIndex at commit 07f1d1b2781c7dd9f6e2a9f5521b3ed43631724c (2026-08-07):
- ``schemas/slicer-extension-catalog-entry-schema-v1.0.2.json`` (last changed in d3b05346c348, identical to
  Slicer/Slicer main ``Schemas/``), which ``.pre-commit-config.yaml`` (check-jsonschema) applies to every entry;
- ``.prettierrc.js`` (multiline arrays, 2-space JSON) and the LF-only check;
- ``scripts/check_description_files.py``: category in ACCEPTED_EXTENSION_CATEGORIES, https scm_url, entry name not
  starting with "Slicer", repository name starting with "Slicer", CMake ``project()`` equal to the entry's name,
  EXTENSION_ICONURL and EXTENSION_SCREENSHOTURLS found with its own regular expressions, a licence file at the root
  (LICENSE_FILE_NAMES), a repository under 100 MB, every build dependency an entry of the index.
Slicer v5.10.0 and v5.12.3 ``CMake/SlicerExtensionCPack.cmake``: packaging stops with "points to an inexistent file"
unless EXTENSION_LICENSE_FILE and EXTENSION_README_FILE exist (UseSlicer.cmake.in defaults them to Slicer's own).
"""

import json
import re
import subprocess
import tomllib
import urllib.parse

from conftest import REPO

ENTRY = REPO / "SwinSSL.json"
CMAKE = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")

# The schema v1.0.2: required keys, every allowed key with its JSON type (additionalProperties: false).
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
SCHEMA_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str, "build_dependencies": list,
                "dicom_support_rule": str, "build_subdirectory": str, "enabled": bool, "tier": int}
SCHEMA_SCM_TYPES = {"git", "local"}
SCHEMA_TIERS = range(1, 6)  # minimum 1, maximum 5
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
ACCEPTED_CATEGORIES = {
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda", "Converters", "DICOM",
    "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation", "Filtering", "Filtering.Morphology",
    "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT", "Informatics", "Netstim", "Neuroimaging",
    "Nuclear Medicine", "Orthodontics", "Osteotomy Planning", "Otolaryngology", "Photogrammetry", "Pipelines", "Planning",
    "Printing", "Quantification", "Radiotherapy", "Registration", "Remote", "Rendering", "SPHARM", "Segmentation", "Sequences",
    "Shape Analysis", "Shape Regression", "Shape Visualization", "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging",
    "Supervisely", "Surface Models", "SurfaceLearner", "Tomographic Reconstruction", "Tracking", "Tractography", "Training",
    "Ultrasound", "Utilities", "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools", "Web System Tools", "Wizards",
}
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
LICENSE_FILE_NAMES = ("LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt")
INDEX_ENTRIES_WE_NEED = {"PyTorch"}  # PyTorch.json (scm_url fepegar/SlicerPyTorch) is in the index at that commit
REPOSITORY_LIMIT_MB = 100
# check_cmakelists_content's own patterns
PROJECT_PATTERN = r"project\s*\(\s*([^\s\)\n\r]+)"
ICON_PATTERN = r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)'
SCREENSHOTS_PATTERN = r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)'


def entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


def cmake_value(name: str) -> str:
    """A ``set(NAME "value")`` of the top-level CMakeLists.txt, with ${CMAKE_CURRENT_SOURCE_DIR} expanded."""
    match = re.search(rf'set\(\s*{name}\s+"([^"]*)"\s*\)', CMAKE)
    assert match, f"CMakeLists.txt does not set {name}"
    return match.group(1).replace("${CMAKE_CURRENT_SOURCE_DIR}", str(REPO))


def test_the_entry_is_valid_under_the_index_schema():
    data = entry()
    assert data["$schema"] == SCHEMA_URL
    assert SCHEMA_REQUIRED <= set(data), f"missing {SCHEMA_REQUIRED - set(data)}"
    assert set(data) <= set(SCHEMA_TYPES), f"not allowed by the schema: {set(data) - set(SCHEMA_TYPES)}"
    for key, value in data.items():
        assert type(value) is SCHEMA_TYPES[key], f"{key}: {type(value).__name__}, the schema wants {SCHEMA_TYPES[key].__name__}"
    assert all(isinstance(item, str) for item in data.get("build_dependencies", []))
    assert data.get("scm_type", "git") in SCHEMA_SCM_TYPES and data.get("tier", 1) in SCHEMA_TIERS


def test_the_entry_is_formatted_as_the_index_lint_writes_it():
    """LF only; prettier with multilineArraysWrapThreshold 0 writes what json.dumps(indent=2) writes (checked on
    MONAIAuto3DSeg.json of the index)."""
    raw = ENTRY.read_bytes()
    assert b"\r" not in raw
    assert raw.decode("utf-8") == json.dumps(entry(), indent=2) + "\n"


def test_the_entry_passes_the_index_checks_that_need_no_network():
    data, name = entry(), ENTRY.stem
    assert data["category"] in ACCEPTED_CATEGORIES and data["category"] == cmake_value("EXTENSION_CATEGORY")
    url = urllib.parse.urlsplit(data["scm_url"])
    assert url.scheme in ("git", "https") and "://" in data["scm_url"]
    repository = url.path.strip("/").split("/")[-1].removesuffix(".git")
    assert repository.startswith(REPOSITORY_PREFIXES) and not name.lower().startswith("slicer")
    assert re.findall(PROJECT_PATTERN, CMAKE, re.IGNORECASE)[0] == name
    assert data["tier"] == 1  # experimental: the modules are checked against Slicer's source, never run in Slicer


def test_build_dependencies_match_extension_depends_and_exist_in_the_index():
    """The submission checklist: the entry is consistent with CMakeLists.txt (dependencies are the same)."""
    depends = cmake_value("EXTENSION_DEPENDS").split()
    assert entry()["build_dependencies"] == ([] if depends == ["NA"] else depends)
    assert set(depends) <= INDEX_ENTRIES_WE_NEED


def test_licence_and_readme_files_exist_where_cmake_says_and_match_the_package_licence():
    names = [name for name in LICENSE_FILE_NAMES if (REPO / name).is_file()]
    assert names, "the index's check_license_file finds no licence file at the root"
    for variable in ("EXTENSION_LICENSE_FILE", "EXTENSION_README_FILE"):
        path = cmake_value(variable)
        assert path.startswith(str(REPO)) and (REPO / path).is_file(), f"{variable} points to an inexistent file: {path}"
    licence = (REPO / cmake_value("EXTENSION_LICENSE_FILE")).read_text(encoding="utf-8")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license"]["text"]
    assert declared == "Apache-2.0" and "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in licence  # the whole text, not a pointer to it


def test_icon_and_screenshots_are_found_by_the_index_and_show_no_web_app_page():
    """EXTENSION_SCREENSHOTURLS must show the Slicer extension: until a picture of the Slicer modules exists, no picture
    of the web app (Resources/Screenshots/SwinSSL-web-*) is presented as the extension's."""
    icon = re.findall(ICON_PATTERN, CMAKE, re.IGNORECASE)
    screenshots = re.findall(SCREENSHOTS_PATTERN, CMAKE, re.IGNORECASE)
    assert icon and screenshots, "the index's check_cmakelists_content needs both"
    urls = [icon[0], *screenshots[0].split()]
    assert len(urls) >= 2  # the checklist: at least one screenshot
    for url in urls:
        assert url.startswith("https://raw.githubusercontent.com/") and url.endswith(".png")
        assert (REPO / url.split("/main/", 1)[1]).is_file(), url
    assert not [url for url in screenshots[0].split() if "-web-" in url]


def test_the_tracked_repository_is_under_the_index_size_limit():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    size = sum((REPO / name).stat().st_size for name in files if name and (REPO / name).is_file())
    assert size < REPOSITORY_LIMIT_MB * 1024 * 1024, f"{size / 2**20:.0f} MB"

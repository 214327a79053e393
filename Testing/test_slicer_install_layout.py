"""The extension as Slicer's build installs it: the engine and the shared logic must be importable from the
installed ``qt-scripted-modules`` folder alone, not from this checkout.

The layout is rebuilt here from our CMake files with the rules read from the macros' source (Slicer
v5.10.0 / v5.12.3 CMake/SlicerMacroBuildScriptedModule.cmake, CTK CMake/ctkMacroCompilePythonScript.cmake
at the commit Slicer pins):
- every SCRIPT and RESOURCE must exist under the calling CMakeLists' folder (else configuration fails);
- SCRIPTS get ``.py`` appended when missing; each path is appended *as given* to
  ``<build>/lib/Slicer-X.Y/qt-scripted-modules`` (nothing normalises ``..``);
- only that folder is installed (``install(DIRECTORY <dest>/ ...)``), so a path that leaves it is lost.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

MACRO = "slicerMacroBuildScriptedModule"


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """CMake commands as (name, arguments); comments removed, arguments split on blanks, quotes dropped."""
    text = re.sub(r"#[^\n]*", "", text)
    return [(name, [a.strip('"') for a in arguments.split()]) for name, arguments in re.findall(r"(\w+)\s*\(([^)]*)\)", text)]


def _expand(items: list[str], variables: dict[str, list[str]]) -> list[str]:
    expanded = []
    for item in items:
        whole = re.fullmatch(r"\$\{(\w+)\}", item)
        if whole:
            expanded += variables.get(whole.group(1), [])
        else:
            expanded.append(re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [])), item))
    return expanded


def scripted_module_calls(folder: Path) -> list[tuple[Path, dict[str, list[str]]]]:
    """Every slicerMacroBuildScriptedModule call reachable from ``folder``/CMakeLists.txt with its keyword
    arguments, following add_subdirectory, set and file(GLOB[_RECURSE] VAR RELATIVE base patterns...)."""
    variables: dict[str, list[str]] = {"CMAKE_CURRENT_SOURCE_DIR": [str(folder)]}
    calls = []
    for name, arguments in _commands((folder / "CMakeLists.txt").read_text(encoding="utf-8")):
        arguments = _expand(arguments, variables)
        if name == "set":
            variables[arguments[0]] = arguments[1:]
        elif name == "file" and arguments[0] in ("GLOB", "GLOB_RECURSE"):
            assert arguments[2] == "RELATIVE", "only file(GLOB VAR RELATIVE base ...) is emulated"
            base, patterns = Path(arguments[3]), arguments[4:]
            found = set()
            for pattern in patterns:
                directory, _, glob = pattern.rpartition("/")
                matches = (folder / directory).rglob(glob) if arguments[0] == "GLOB_RECURSE" else (folder / directory).glob(glob)
                found |= {os.path.relpath(p, base).replace(os.sep, "/") for p in matches if p.is_file()}
            variables[arguments[1]] = sorted(found)
        elif name == "add_subdirectory":
            calls += scripted_module_calls(folder / arguments[0])
        elif name == MACRO:
            keywords, current = {}, None
            for argument in arguments:
                if argument in ("NAME", "SCRIPTS", "RESOURCES"):
                    current = keywords.setdefault(argument, [])
                elif argument in ("WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"):
                    current = None
                elif current is not None:
                    current.append(argument)
            calls.append((folder, keywords))
    return calls


def install_tree(repo: Path, lib_dir: Path) -> Path:
    """What Slicer's build and install put into ``lib/Slicer-X.Y/qt-scripted-modules``."""
    destination = (lib_dir / "qt-scripted-modules").resolve()
    for source_dir, keywords in scripted_module_calls(repo):
        for kind in ("SCRIPTS", "RESOURCES"):
            for item in keywords.get(kind, []):
                if kind == "SCRIPTS" and not item.endswith(".py"):
                    item += ".py"
                source = source_dir / item
                assert source.is_file(), f"{source_dir}/CMakeLists.txt lists {item}, which does not exist (CMake configure error)"
                target = Path(os.path.normpath(destination / item))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read_bytes())
    return destination


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    return install_tree(REPO, tmp_path_factory.mktemp("Slicer-5.10") / "lib" / "Slicer-5.10")


def test_every_file_the_extension_needs_is_inside_the_installed_folder(installed):
    names = {p.relative_to(installed).as_posix() for p in installed.rglob("*") if p.is_file()}
    assert {"SwinSSLSegment.py", "SwinSSLPretrain.py", "Resources/UI/SwinSSLSegment.ui", "Resources/UI/SwinSSLPretrain.ui",
            "Resources/Icons/SwinSSLSegment.png", "Resources/Icons/SwinSSLPretrain.png"} <= names
    engine = {p.relative_to(REPO).as_posix() for p in (REPO / "swinssl").rglob("*.py")}
    shared = {p.relative_to(REPO).as_posix() for p in (REPO / "swinssl_slicer").rglob("*.py")}
    assert engine | shared <= names, sorted((engine | shared) - names)
    assert "swinssl/resources/demo_ct.nii.gz" in names  # the self-tests' sample data
    assert {"swinssl/resources/demo_organs/model.json", "swinssl/resources/demo_organs/model.safetensors"} <= names  # in a subfolder
    outside = [p for p in installed.parent.rglob("*") if p.is_file() and installed not in p.parents]
    assert not outside, f"built outside qt-scripted-modules, so never installed: {outside[:3]}"


def test_the_engine_runs_from_the_installed_folder_alone(installed, tmp_path):
    """As Slicer runs it: qt-scripted-modules on sys.path (qSlicerScriptedLoadableModuleFactory adds each
    module's folder), the checkout nowhere, the engine started as a subprocess by the installed runner."""
    program = (
        "import sys\n"
        "from swinssl_slicer.engine import engine_root, ensure_engine_on_path\n"
        "root = ensure_engine_on_path()\n"
        "import swinssl, swinssl_slicer.segment_logic, swinssl.runner\n"
        "from swinssl.runner import EngineProcess\n"
        "from pathlib import Path\n"
        "engine = EngineProcess.start(['--version'], Path(sys.argv[1]) / 'events.jsonl')\n"
        "engine.wait(timeout=120)\n"
        "print(root, swinssl.__file__, swinssl_slicer.segment_logic.__file__, engine.exit_code, engine.log_tail().strip(), sep='\\n')\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["PYTHONPATH"] = str(installed)
    result = subprocess.run([sys.executable, "-c", program, str(tmp_path)], capture_output=True, text=True, cwd=tmp_path,
                            env=environment, timeout=180)
    assert result.returncode == 0, result.stderr
    root, engine_file, logic_file, exit_code, version = result.stdout.strip().splitlines()
    assert Path(root) == installed
    assert Path(engine_file).is_relative_to(installed) and Path(logic_file).is_relative_to(installed)
    assert exit_code == "0" and version.startswith("swinssl ")


def test_the_old_layout_rule_is_caught(tmp_path):
    """A module that lists ../swinssl/*.py (as the modules once did) builds the engine outside the folder."""
    (tmp_path / "swinssl").mkdir()
    (tmp_path / "swinssl" / "__init__.py").write_text("")
    (tmp_path / "Module").mkdir()
    (tmp_path / "Module" / "Module.py").write_text("")
    (tmp_path / "CMakeLists.txt").write_text("add_subdirectory(Module)\n")
    (tmp_path / "Module" / "CMakeLists.txt").write_text(
        "file(GLOB_RECURSE ENGINE RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} ../swinssl/*.py)\n"
        f"{MACRO}(NAME Module SCRIPTS Module.py ${{ENGINE}})\n")
    installed = install_tree(tmp_path, tmp_path / "build" / "lib" / "Slicer-5.10")
    assert not (installed / "swinssl" / "__init__.py").exists()
    assert (installed.parent / "swinssl" / "__init__.py").exists()  # lib/Slicer-5.10/swinssl: not installed

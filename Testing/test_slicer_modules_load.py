"""The module files under the Pythons of the Slicers they meet (issue 25, items 5 and 7), run by the real interpreters:
Python 3.9 (Slicer 5.8.1: Slicer_REQUIRED_PYTHON_VERSION in CMakeLists.txt) and 3.12 (Slicer 5.10.0 and 5.12.3).

On 3.9 each module file is executed as Slicer's module loader does (every annotation and default evaluated) and its
widget set up on a Slicer that reports 5.8: it must say that 5.10 is needed and build nothing, and its self-test must
fail, not pass. Slicer's own modules (qt, slicer, ScriptedLoadableModule) cannot run here, so the program below stands
in for the few names the module files touch before that point; anything else they touched would fail the test.
"""

import glob
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

MODULES = ("SwinSSLSegment", "SwinSSLPretrain")


def interpreter(version: str) -> str:
    """A real, working ``python<version>``: one of pyenv's (this machine's image has 3.9.18 and 3.12.1), else on PATH
    (where pyenv's shim for a version it does not select fails, so each candidate is run once)."""
    candidates = sorted(glob.glob(str(Path.home() / f".pyenv/versions/{version}.*/bin/python{version}"))) + [shutil.which(f"python{version}")]
    for candidate in filter(None, candidates):
        check = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.strip() == version:
            return candidate
    pytest.skip(f"no Python {version} interpreter on this machine")


def compile_all(python: str, paths: list) -> subprocess.CompletedProcess:
    program = ("import sys\nfor path in sys.argv[1:]:\n"
               "    compile(open(path, encoding='utf-8').read(), path, 'exec', dont_inherit=True)\n")
    return subprocess.run([python, "-c", program, *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_every_file_slicer_runs_compiles_under_python_3_12():
    """Slicer 5.10 and 5.12 run the module files, the shared logic and the engine in their Python 3.12."""
    paths = [REPO / f"{m}" / f"{m}.py" for m in MODULES] + sorted((REPO / "swinssl_slicer").glob("*.py")) + sorted((REPO / "swinssl").rglob("*.py"))
    result = compile_all(interpreter("3.12"), paths)
    assert result.returncode == 0, result.stderr[-3000:]


LOAD_ON_SLICER_5_8 = r'''
import json, runpy, sys, types, unittest

sys.path.insert(0, sys.argv[1])
# Slicer 5.8.1 ships packaging 24.0 (SuperBuild/External_python-pythonqt-requirements.cmake); this Python 3.9 has only
# pip's copy (PyPI's packaging 26 needs 3.10), which stands in for it.
import pip._vendor.packaging as packaging, pip._vendor.packaging.requirements
sys.modules.update({"packaging": packaging, "packaging.requirements": packaging.requirements})

shown = []


class Stub:
    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):  # setInterval, connect, start, stop, addStretch, ...
        return lambda *args, **kwargs: None


class Label(Stub):
    def __init__(self, text=""):
        shown.append(text)


class Layout(Stub):
    def addWidget(self, widget):
        pass


def not_on_5_8(*args, **kwargs):
    raise AssertionError("the panel was built on Slicer 5.8")


class Widget:
    resourcePath = staticmethod(not_on_5_8)

    def __init__(self, parent=None):
        self.parent, self.layout = parent, Layout()

    def setup(self):
        pass


class Module:
    def __init__(self, parent):
        self.parent = parent


qt = types.ModuleType("qt")
qt.QTimer, qt.QLabel = Stub, Label
slicer = types.ModuleType("slicer")
slicer.app = types.SimpleNamespace(majorVersion=5, minorVersion=8, connect=lambda signal, slot: slot())  # as if started
slicer.mrmlScene = Stub()
slicer.vtkMRMLScalarVolumeNode = type("vtkMRMLScalarVolumeNode", (), {})
slicer.vtkMRMLSegmentationNode = type("vtkMRMLSegmentationNode", (), {})
slicer.util = types.ModuleType("slicer.util")
slicer.util.VTKObservationMixin = type("VTKObservationMixin", (), {"__init__": lambda self: None, "removeObservers": lambda self: None})
slicer.util.loadUI = slicer.util.childWidgetVariables = not_on_5_8
slicer.parameterNodeWrapper = types.ModuleType("slicer.parameterNodeWrapper")
slicer.parameterNodeWrapper.parameterNodeWrapper = lambda cls: cls
slicer.parameterNodeWrapper.Choice = slicer.parameterNodeWrapper.WithinRange = Stub
slicer.ScriptedLoadableModule = types.ModuleType("slicer.ScriptedLoadableModule")
slicer.ScriptedLoadableModule.ScriptedLoadableModule = Module
slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget = Widget
slicer.ScriptedLoadableModule.ScriptedLoadableModuleLogic = Stub
slicer.ScriptedLoadableModule.ScriptedLoadableModuleTest = unittest.TestCase
for module in (qt, slicer, slicer.util, slicer.parameterNodeWrapper, slicer.ScriptedLoadableModule):
    sys.modules[module.__name__] = module

name = sys.argv[2]
loaded = runpy.run_path(f"{sys.argv[1]}/{name}/{name}.py", run_name=name)
loaded[name](types.SimpleNamespace())
widget = loaded[name + "Widget"](types.SimpleNamespace(isEntered=True))
widget.setup()
widget.enter()
widget.exit()
widget.cleanup()
test = loaded[name + "Test"]()
test.delayDisplay = lambda message: None
try:
    test.runTest()
    outcome = "passed"
except Exception as error:
    outcome = f"{type(error).__name__}: {error}"
print(json.dumps({"shown": shown, "self_test": outcome, "imported": sorted(m for m in sys.modules if m.startswith("swinssl"))}))
'''


@pytest.mark.parametrize("module", MODULES)
def test_on_slicer_5_8_the_module_loads_says_so_and_its_self_test_fails(module):
    """Item 5: the modules load on Slicer 5.8's Python 3.9, say 5.10 is needed and do nothing else (no panel, no engine
    import). Item 7: the self-test fails loudly there; it printed "NOT RUN" and passed when requirements were missing."""
    python = interpreter("3.9")
    shared = [REPO / f"{module}" / f"{module}.py"] + sorted((REPO / "swinssl_slicer").glob("*.py"))
    compiled = compile_all(python, shared)  # syntax of every shared-logic file, loaded on 5.8 or not
    result = subprocess.run([python, "-c", LOAD_ON_SLICER_5_8, str(REPO), module], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    too_old = "SwinSSL needs 3D Slicer 5.10 or later (this is 5.8, whose Python is too old for the engine)"
    assert report["shown"] == [too_old]
    assert report["self_test"] == f"RuntimeError: {too_old}"
    assert set(report["imported"]) <= {"swinssl_slicer", "swinssl_slicer.desktop_install", "swinssl_slicer.engine", "swinssl_slicer.show_3d"}
    assert compiled.returncode == 0, compiled.stderr[-3000:]

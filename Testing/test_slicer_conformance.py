"""What the Slicer modules may use, as verified in Slicer's source (tags v5.10.0 and v5.12.3, the versions
supported), checked against the module files, the .ui files and the CMake files. The Qt widgets cannot
run without Slicer's GUI, so each fact below is encoded where it was read, and a change that breaks one
fails here."""

import ast
import re
import tomllib
import xml.etree.ElementTree as ElementTree

import pytest

from conftest import REPO

MODULES = [p.name for p in sorted(REPO.glob("SwinSSL*")) if (p / f"{p.name}.py").is_file()]

# Base/Python/slicer/parameterNodeWrapper/guiConnectors.py (identical in v5.10.0 and v5.12.3): each
# connector matches the widget's exact class and accepts these annotation types; anything else makes
# createGuiConnector raise "Unable to create GUI connector ..." and the module's setup() fails.
CONNECTOR_TYPES = {
    "QCheckBox": {"bool"}, "ctkCheckBox": {"bool"}, "QPushButton": {"bool"},
    "QSlider": {"int"}, "QSpinBox": {"int"},
    "QDoubleSpinBox": {"float", "int"}, "ctkSliderWidget": {"float", "int"}, "qMRMLSliderWidget": {"float", "int"},
    "ctkDoubleSpinBox": {"float", "int"}, "qMRMLSpinBox": {"float", "int"},
    "QComboBox": {"int", "float", "str", "bool"}, "ctkComboBox": {"int", "float", "str", "bool"},
    "QLineEdit": {"str"}, "QLabel": {"str"}, "QTextEdit": {"str"},
    "ctkPathLineEdit": {"Path"}, "ctkDirectoryButton": {"Path"},  # pathlib types only: not str, not Optional[Path]
    "qMRMLNodeComboBox": {"vtkMRMLNode"},
}
NEEDS_CHOICE = {"QComboBox", "ctkComboBox"}  # "ComboBoxToStringableConnector requires the Choice annotation"
# Float connectors set -inf..inf without bounds (ctkSliderWidget raises); we bound every number we bind.
NEEDS_RANGE = {"QSlider", "QSpinBox", "QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSpinBox", "qMRMLSpinBox"}
# Python bundled with each Slicer (CMakeLists.txt Slicer_REQUIRED_PYTHON_VERSION).
SLICER_PYTHON = {(5, 8): (3, 9), (5, 10): (3, 12), (5, 12): (3, 12)}


def module_tree(module: str) -> ast.Module:
    return ast.parse((REPO / module / f"{module}.py").read_text())


def ui_widgets(module: str) -> tuple[dict[str, str], dict[str, str]]:
    """({widget name: class}, {widget name: SlicerParameterName}) of the module's .ui file."""
    root = ElementTree.parse(REPO / module / "Resources" / "UI" / f"{module}.ui").getroot()
    classes = {w.get("name"): w.get("class") for w in root.iter("widget")} | {w.get("name"): w.get("class") for w in root.iter("layout")}
    parameters = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameters[widget.get("name")] = prop.find("string").text
    return classes, parameters


def parameter_fields(module: str) -> dict[str, tuple[str, set[str]]]:
    """{field: (base type, {annotation markers such as Choice, WithinRange})} of the @parameterNodeWrapper class."""
    for node in module_tree(module).body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            fields = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign):
                    annotation, markers = item.annotation, set()
                    if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", None) == "Annotated":
                        base, *extras = annotation.slice.elts
                        markers = {e.func.id for e in extras if isinstance(e, ast.Call)}
                        annotation = base
                    fields[item.target.id] = (ast.unparse(annotation), markers)
            return fields
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


def function_source(module: str, class_name: str, method: str) -> str:
    tree = module_tree(module)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return ast.unparse(next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method))


def test_there_are_two_modules():
    assert MODULES == ["SwinSSLPretrain", "SwinSSLSegment"]


@pytest.mark.parametrize("module", MODULES)
def test_every_bound_widget_has_a_connector_for_its_field_type(module):
    """Item 1 of issue 10: outputFolder/initWeights were str on ctkPathLineEdit, which crashes setup()."""
    classes, parameters = ui_widgets(module)
    fields = parameter_fields(module)
    assert parameters
    for widget, name in parameters.items():
        assert name in fields, f"{module}.ui binds {widget} to unknown parameter {name}"
        widget_class, (field_type, markers) = classes[widget], fields[name]
        accepted = CONNECTOR_TYPES.get(widget_class)
        assert accepted is not None, f"{widget}: no parameterNodeWrapper connector handles {widget_class}"
        kind = "vtkMRMLNode" if field_type.startswith("vtkMRML") else field_type
        assert kind in accepted, f"{module}.{name}: {widget_class} accepts {sorted(accepted)}, the field is {field_type}"
        if widget_class in NEEDS_CHOICE:
            assert "Choice" in markers, f"{module}.{name}: a combo box needs a Choice annotation"
        if widget_class in NEEDS_RANGE:
            assert "WithinRange" in markers, f"{module}.{name}: unbounded number on {widget_class} (item 12)"


@pytest.mark.parametrize("module", MODULES)
def test_widget_code_uses_only_widgets_that_exist_in_the_ui_file(module):
    classes, _ = ui_widgets(module)
    used = set(re.findall(r"self\.ui\.(\w+)", (REPO / module / f"{module}.py").read_text()))
    assert used and used <= set(classes), f"missing in {module}.ui: {sorted(used - set(classes))}"


@pytest.mark.parametrize("module", MODULES)
def test_modules_import_only_the_shared_logic_not_each_other(module):
    source = (REPO / module / f"{module}.py").read_text()
    others = [m for m in MODULES if m != module]
    assert not any(re.search(rf"\b(import|from)\s+{other}\b", source) for other in others)
    assert "self.parent.dependencies = []" in source
    assert "swinssl_slicer" in source


@pytest.mark.parametrize("module", MODULES)
def test_api_facts_read_in_slicer_source(module):
    source = (REPO / module / f"{module}.py").read_text()
    # ScriptedLoadableModuleTest.runTest calls test methods directly; onReloadAndTest catches nothing:
    # unittest.SkipTest is reported as a failure (item 14).
    assert ".skipTest(" not in source and "SkipTest" not in source
    # vtkMRMLScene::GetNodesByClass returns a collection the caller must delete (item 8): use
    # swinssl_slicer.mrml_io.nodes_by_class, which releases it.
    assert "GetNodesByClass" not in source
    # slicer.packaging (pip_ensure) exists only from 5.12; slicer.util.pip_install is in 5.10 and 5.12.
    assert "slicer.packaging" not in source
    # Properties of qSlicerCoreApplication (Q_PROPERTY) and its PythonQt decorator, in both versions.
    # (qt.QThread.msleep is not used: Slicer 5.10's own Python never calls it, so it is unproven there.)
    assert "msleep" not in source
    for used in re.findall(r"slicer\.app\.(\w+)", source):
        assert used in {"majorVersion", "minorVersion", "testingEnabled", "temporaryPath", "layoutManager", "processEvents"}, used
    # Dependency installs run only through the shared desktop check (item 7), from the widget.
    assert "ensure_in_slicer()" in function_source(module, f"{module}Widget", "ensureDependencies")
    assert source.count("ensure_in_slicer()") == 1 and "pip_install" not in source and "installTorch" not in source
    # QTimer slots catch their errors: an exception in a slot would repeat at every tick.
    assert "except Exception" in function_source(module, f"{module}Widget", "onPoll")


def test_the_desktop_check_shows_errors_and_never_installs_during_self_tests():
    """slicer.util.tryWithErrorDisplay shows the error and re-raises it (util.py, 5.10 and 5.12): the
    caller catches it; slicer.app.testingEnabled() is the PythonQt decorator of qSlicerCoreApplication."""
    source = (REPO / "swinssl_slicer" / "desktop_install.py").read_text()
    check = source[source.index("def ensure_in_slicer"):]
    assert "tryWithErrorDisplay(" in check and "except Exception:" in check and "testing=slicer.app.testingEnabled()" in check
    assert "busy=slicer.util.WaitCursor" in check  # not around the confirmation prompt


def test_segment_setup_creates_the_parameter_node_before_the_model_list():
    """Item 5: the model list writes the chosen model into the parameter node, which must exist first."""
    setup = function_source("SwinSSLSegment", "SwinSSLSegmentWidget", "setup")
    assert "self.initializeParameterNode()" in setup and "refreshModels()" not in setup.split("self.initializeParameterNode()")[0]
    assert "self._parameterNode.modelPath = " in function_source("SwinSSLSegment", "SwinSSLSegmentWidget", "onModelChanged")


def test_segment_inputs_follow_the_model_not_widget_visibility():
    """Item 10: .visible is False for a widget inside a collapsed section; the model's channels decide."""
    apply = function_source("SwinSSLSegment", "SwinSSLSegmentWidget", "startRun")  # Segment, and Segment anyway after a refusal
    assert "visible" not in apply and "channelNames" in apply


def test_segment_shows_the_models_training_and_offers_to_segment_anyway_after_a_refusal():
    """Issue 22: the label under the model list says what the model was trained on; a refused input (run.mismatch) asks
    (slicer.util.confirmYesNoDisplay(text): util.py, 5.10 and 5.12) before running again with the override."""
    poll = function_source("SwinSSLSegment", "SwinSSLSegmentWidget", "onPoll")
    assert "if run.mismatch and slicer.util.confirmYesNoDisplay(" in poll and "self.startRun(allowMismatch=True)" in poll
    assert "self.finishRun(" in poll.split("confirmYesNoDisplay")[0]  # the timer is stopped before the dialog
    assert "self.logic.modelDetails(path)" in function_source("SwinSSLSegment", "SwinSSLSegmentWidget", "onModelChanged")


def test_pretrain_shows_layout_and_plot_once_per_run():
    """Item 9: the layout is set at a run's first preview only; the plot at every run's first progress."""
    poll = function_source("SwinSSLPretrain", "SwinSSLPretrainWidget", "pollRun")
    assert "run.show_previews" in poll and "run.show_plot" in poll and "step == 1" not in poll


def test_pretrain_labels_each_preview_view_with_its_own_annotation():
    """Issue 23: each preview event labels the red / yellow / green views (original / masked / reconstruction) and logs
    the hole metrics. DataProbe's SliceViewAnnotations.makeAnnotationText rewrites all four corners of a view's
    cornerAnnotation() on every update, so the label is an actor of its own on the view's renderer
    (ctkVTKAbstractView::renderWindow, scheduleRender)."""
    poll = function_source("SwinSSLPretrain", "SwinSSLPretrainWidget", "pollRun")
    assert "if event['event'] == 'preview':" in poll and "self.logic.labelPreviews(" in poll and "metrics_text(event)" in poll
    label = function_source("SwinSSLPretrain", "SwinSSLPretrainLogic", "labelPreviews")
    assert "vtk.vtkCornerAnnotation()" in label and "renderWindow().GetRenderers().GetFirstRenderer().AddViewProp(" in label
    assert ".cornerAnnotation()" not in label and "PANEL_LABELS[kind]" in label and "sliceView.scheduleRender()" in label


def test_torch_is_installed_through_the_pytorch_extension_with_a_version_requirement():
    source = (REPO / "swinssl_slicer" / "desktop_install.py").read_text()
    # SlicerPyTorch: installTorch(askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None, ...)
    assert re.search(r"installTorch\(askConfirmation=False, torchVersionRequirement=", source)
    assert "slicer.util.pip_install(" in source  # takes a list (util.py, 5.10 and 5.12)


def test_supported_slicer_versions_match_the_python_the_engine_needs():
    from swinssl_slicer.desktop_install import MINIMUM_SLICER

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    required = tuple(int(part) for part in re.search(r">=\s*(\d+)\.(\d+)", pyproject["project"]["requires-python"]).groups())
    supported = [version for version in SLICER_PYTHON if version >= MINIMUM_SLICER]
    assert supported and all(SLICER_PYTHON[version] >= required for version in supported)
    assert all(SLICER_PYTHON[version] < required for version in SLICER_PYTHON if version < MINIMUM_SLICER)


def test_engine_requirements_are_the_packages_dependencies():
    from swinssl_slicer.engine import ENGINE_REQUIREMENTS

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert list(ENGINE_REQUIREMENTS) == pyproject["project"]["dependencies"]


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_lists_its_files(module):
    cmake = (REPO / module / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in cmake and "WITH_GENERIC_TESTS" in cmake and "slicer_add_python_unittest" in cmake
    for path in (REPO / module).rglob("*"):
        if path.suffix in (".py", ".ui", ".png") and "__pycache__" not in path.parts:
            relative = path.relative_to(REPO / module).as_posix().replace(module, "${MODULE_NAME}")
            assert relative in cmake, f"{relative} is not in {module}/CMakeLists.txt"


def test_extension_metadata_points_at_files_that_exist():
    top = (REPO / "CMakeLists.txt").read_text()
    assert 'EXTENSION_DEPENDS "PyTorch"' in top and 'EXTENSION_CATEGORY "Segmentation"' in top
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        urls = re.search(rf'set\({key} "([^"]+)"\)', top).group(1).split()
        for url in urls:
            path = url.split("/main/", 1)[1]
            assert (REPO / path).is_file(), f"{key}: {path} does not exist"


def test_import_puts_the_engine_on_the_path_before_importing_it():
    """Item 6: right after installing dependencies, Import... imported swinssl without the engine on sys.path."""
    source = function_source("SwinSSLSegment", "SwinSSLSegmentLogic", "importModel")
    assert source.index("ensure_engine_on_path()") < source.index("from swinssl.models import")
    assert "self.refreshModels()" in function_source("SwinSSLSegment", "SwinSSLSegmentWidget", "ensureDependencies")


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in [*REPO.glob("SwinSSL*/SwinSSL*.py"), *(REPO / "swinssl_slicer").glob("*.py")]))
def test_modules_load_in_python_3_9_to_say_the_slicer_is_too_old(path):
    """Slicer 5.8 (Python 3.9, SuperBuild/External_python.cmake at v5.8.1) must load the module files so that
    check_slicer_version can say 5.10 is needed: 3.9 syntax only, and no ``X | None`` annotation evaluated when a
    function is defined (a TypeError in 3.9) unless the file postpones annotations."""
    source = (REPO / path).read_text()
    tree = ast.parse(source, feature_version=SLICER_PYTHON[(5, 8)])
    if "from __future__ import annotations" in source:
        return
    annotations = [a.annotation for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for a in f.args.posonlyargs + f.args.args + f.args.kwonlyargs if a.annotation]
    annotations += [f.returns for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.returns]
    annotations += [n.annotation for n in ast.walk(tree) if isinstance(n, ast.AnnAssign)]
    unions = [ast.unparse(a) for a in annotations if any(isinstance(x, ast.BinOp) and isinstance(x.op, ast.BitOr) for x in ast.walk(a))]
    assert not unions, f"{path}: {unions} (use Optional/Union, or postpone annotations)"


def test_a_finished_fine_tuning_is_installed_and_reported_without_torch_or_monai(tmp_path):
    """The end of a fine-tuning runs in a face's poll, on Slicer's GUI thread: installing the tuned model and
    writing its comparison lines must not import torch or MONAI (seconds of frozen GUI). Run in a Python where
    importing either fails."""
    import shutil
    import subprocess
    import sys

    run_folder = tmp_path / "runs" / "demo-organs-tuned-1"
    shutil.copytree(REPO / "swinssl" / "resources" / "demo_organs", run_folder)
    script = (
        "import sys; sys.modules.update(torch=None, monai=None); sys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\n"
        "from swinssl_slicer.training_logic import TrainingLogic, TrainingRun\n"
        "run = TrainingRun('finetune', None, Path(sys.argv[2]), install=Path(sys.argv[3]))\n"
        "TrainingLogic.install(run); print(run.comparison_lines())\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(REPO), str(run_folder), str(tmp_path / "models" / run_folder.name)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "models" / run_folder.name / "model.json").is_file() and result.stdout.strip() == "[]"

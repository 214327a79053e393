"""Static checks of the Slicer modules (the Qt widgets cannot run without Slicer's GUI):
every ``self.ui.X`` the widget code uses exists in the .ui file, every SlicerParameterName is a
parameter-node field, and the CMake files list what the module needs."""

import ast
import re
import xml.etree.ElementTree as ElementTree

import pytest

from conftest import REPO

MODULES = [p.name for p in sorted(REPO.glob("SwinSSL*")) if (p / f"{p.name}.py").is_file()]


def ui_widgets(module: str) -> tuple[set[str], dict[str, str]]:
    root = ElementTree.parse(REPO / module / "Resources" / "UI" / f"{module}.ui").getroot()
    names = {w.get("name") for w in root.iter("widget")} | {w.get("name") for w in root.iter("layout")}
    parameters = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameters[widget.get("name")] = prop.find("string").text
    return names, parameters


def parameter_fields(module: str) -> set[str]:
    tree = ast.parse((REPO / module / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


def test_there_are_two_modules():
    assert MODULES == ["SwinSSLPretrain", "SwinSSLSegment"]


@pytest.mark.parametrize("module", MODULES)
def test_widget_code_uses_only_widgets_that_exist_in_the_ui_file(module):
    names, _ = ui_widgets(module)
    used = set(re.findall(r"self\.ui\.(\w+)", (REPO / module / f"{module}.py").read_text()))
    assert used, "the widget code uses no ui widget?"
    assert used <= names, f"missing in {module}.ui: {sorted(used - names)}"


@pytest.mark.parametrize("module", MODULES)
def test_every_slicer_parameter_name_is_a_parameter_node_field(module):
    _, parameters = ui_widgets(module)
    fields = parameter_fields(module)
    assert parameters and set(parameters.values()) <= fields, f"unknown: {sorted(set(parameters.values()) - fields)}"


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_lists_its_scripts_and_resources(module):
    cmake = (REPO / module / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in cmake and "WITH_GENERIC_TESTS" in cmake and "slicer_add_python_unittest" in cmake
    for path in (REPO / module).rglob("*"):
        if path.suffix in (".py", ".ui", ".png") and "__pycache__" not in path.parts:
            relative = path.relative_to(REPO / module).as_posix().replace(module, "${MODULE_NAME}")
            assert relative in cmake, f"{relative} is not in {module}/CMakeLists.txt"
    top = (REPO / "CMakeLists.txt").read_text()
    assert f"add_subdirectory({module})" in top and 'EXTENSION_DEPENDS "PyTorch"' in top and 'EXTENSION_CATEGORY "Segmentation"' in top

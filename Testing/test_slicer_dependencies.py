"""The engine's requirements as the Slicer modules check them: by installed version, without importing the
deep-learning stack, never installing during self-tests."""

import subprocess
import sys
import types

import pytest

from conftest import REPO


def test_requirements_are_checked_by_version_not_by_presence():
    """Another extension may have installed an older MONAI: present, but not what the engine needs."""
    from swinssl_slicer.engine import installed_version, unmet_requirements

    monai = installed_version("monai")
    assert monai is not None and unmet_requirements(("monai>=1.5",)) == []
    (old,) = unmet_requirements(("monai<1.5",))  # as if the installed one were outside the range
    assert old.found == monai and str(old) == f"monai<1.5 (installed: {monai})"
    (missing,) = unmet_requirements(("swinssl-no-such-distribution>=1",))
    assert missing.found is None and "not installed" in str(missing)
    assert unmet_requirements() == []  # this test environment has everything


def test_a_package_upgraded_under_a_running_process_asks_for_a_restart(monkeypatch):
    from swinssl_slicer.engine import stale_imports

    assert stale_imports(("tqdm>=4.60",)) == []
    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(__version__="4.0.0"))  # imported before an upgrade
    (stale,) = stale_imports(("tqdm>=4.60",))
    assert stale.startswith("tqdm (running 4.0.0, installed ")


def test_self_tests_and_a_declined_prompt_install_nothing():
    from swinssl_slicer.desktop_install import ensure_engine_requirements

    def must_not_ask(text):
        raise AssertionError("asked during a self-test")

    unmet = ("swinssl-no-such-distribution>=1",)
    assert ensure_engine_requirements(must_not_ask, testing=True, requirements=unmet) is False
    asked = []
    assert ensure_engine_requirements(lambda text: asked.append(text) or False, testing=False, requirements=unmet) is False
    assert "swinssl-no-such-distribution>=1 (not installed)" in asked[0]
    assert ensure_engine_requirements(must_not_ask, testing=False) is True  # all met: no prompt


@pytest.mark.parametrize("version, supported", [((5, 8), False), ((5, 10), True), ((5, 12), True)])
def test_supported_slicer_versions(version, supported):
    from swinssl_slicer.desktop_install import check_slicer_version

    if supported:
        check_slicer_version(version)
    else:
        with pytest.raises(RuntimeError, match=r"needs 3D Slicer 5\.10 or later"):
            check_slicer_version(version)


def test_listing_models_imports_neither_torch_nor_monai(tmp_path):
    """Opening the Segment module lists models, the catalogue and the training set; MONAIAuto3DSeg likewise reads JSON
    and leaves torch to its subprocess. psutil (an engine requirement) is not needed before a run starts either."""
    from test_segmentation import make_package

    make_package(tmp_path / "models" / "tiny")
    program = (
        "import sys, slicer\n"
        "from pathlib import Path\n"
        "from swinssl_slicer.segment_logic import SegmentationLogic\n"
        "logic = SegmentationLogic(slicer.vtkMRMLScene(), models_folder=Path(sys.argv[1]))\n"
        "chosen = logic.choose_model('')\n"
        "from swinssl_slicer.catalogue_logic import CatalogueLogic\n"
        "from swinssl_slicer.training_logic import count_cases, default_training_set\n"
        "catalogue = CatalogueLogic(models_folder=Path(sys.argv[1]))\n"
        "assert catalogue.entries() and count_cases(default_training_set()) >= 0\n"
        "print([p.name for p in logic.available_models()], Path(chosen).name, logic.channel_names(chosen))\n"
        "print(sorted(m for m in ('torch', 'monai', 'matplotlib', 'psutil', 'SimpleITK') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", program, str(tmp_path / "models")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    listed, imported = result.stdout.strip().splitlines()
    assert listed == "['tiny-abdomen'] tiny ['CT']"
    assert imported == "[]"


# SlicerMONAIAuto3DSeg (lassoan/SlicerMONAIAuto3DSeg at 9cdf2df4e8b3, MONAIAuto3DSeg/MONAIAuto3DSegLib/dependency_handler.py,
# setupPythonRequirements): slicer.util.pip_install("monai[fire,...]>=1.3"), with --upgrade when its user asks for an update.
MONAI_AUTO3DSEG_REQUIREMENT = "monai>=1.3"


def test_monai_is_required_so_that_monai_auto3dseg_and_swinssl_never_reinstall_over_each_other():
    """Issue 25 item 15: with an upper bound, MONAIAuto3DSeg's install (the newest MONAI) would be 'unmet' for us and our
    install (a capped MONAI) would be replaced at its next update: the two would reinstall over each other in one Slicer."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    from swinssl_slicer.engine import ENGINE_REQUIREMENTS

    ours = Requirement(next(text for text in ENGINE_REQUIREMENTS if Requirement(text).name == "monai"))
    theirs = Requirement(MONAI_AUTO3DSEG_REQUIREMENT)
    assert [spec.operator for spec in ours.specifier] == [">="]  # a lower bound only
    minimum = Version(next(iter(ours.specifier)).version)
    assert theirs.specifier.contains(minimum)  # what we install satisfies them
    for newest in ("1.6.1", "1.7.0", "2.0.0"):  # whatever their install or --upgrade brings satisfies us
        assert theirs.specifier.contains(newest) and ours.specifier.contains(newest)


def test_a_self_test_installs_what_is_missing_without_asking_or_fails(monkeypatch):
    """Issue 25 item 7: a self-test printed "NOT RUN" and passed when requirements were missing, so ``ctest -R py_SwinSSL``
    was green having tested nothing. prepare_self_test installs them without a prompt (as MONAIAuto3DSeg's logic test
    does) and raises when the Slicer is too old or the requirement is still unmet afterwards."""
    import slicer.util

    from swinssl_slicer.desktop_install import prepare_self_test

    installed = []
    monkeypatch.setattr(slicer.util, "pip_install", installed.append, raising=False)  # pip itself: nothing is installed here
    prepare_self_test((5, 12))  # everything met here: nothing to install
    assert installed == []
    with pytest.raises(RuntimeError, match=r"still not met after installing:\n- swinssl-no-such-distribution>=1 \(not installed\)"):
        prepare_self_test((5, 10), requirements=("swinssl-no-such-distribution>=1",))
    assert installed == [["swinssl-no-such-distribution>=1"]]
    with pytest.raises(RuntimeError, match=r"needs 3D Slicer 5\.10 or later \(this is 5\.8"):
        prepare_self_test((5, 8), requirements=("swinssl-no-such-distribution>=1",))
    assert len(installed) == 1

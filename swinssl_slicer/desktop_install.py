"""Installing the engine's requirements into 3D Slicer's Python (the desktop modules only; the web app's
environment is set up by pip). Imports ``slicer.util`` and the PyTorch extension inside the function, so
the rest of this package stays importable without Slicer's application.

Verified against Slicer v5.10.0 and v5.12.3:
- ``slicer.util.pip_install`` takes a string or a list (Base/Python/slicer/util.py) and raises
  ``CalledProcessError`` on failure; ``slicer.packaging.pip_ensure`` exists only from 5.12, so it is not used.
- PyTorchUtils' ``installTorch(askConfirmation, forceComputationBackend, torchVersionRequirement, ...)``
  installs ``"torch" + torchVersionRequirement`` with light-the-torch (CUDA-matched wheel); with
  ``askConfirmation=False`` it returns torch or raises (SlicerPyTorch, PyTorchUtils/PyTorchUtils.py).
- ``slicer.util.tryWithErrorDisplay(message)`` shows the error, then re-raises it.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

from swinssl_slicer.engine import ENGINE_REQUIREMENTS, TORCH_REQUIREMENT, stale_imports, unmet_requirements

MINIMUM_SLICER = (5, 10)  # Python 3.12; 5.8 ships Python 3.9, older than the engine supports (3.10+)


class RestartRequired(RuntimeError):
    """Packages were installed over versions this Slicer process already imported."""


def unsupported_slicer(version: tuple[int, int]) -> str | None:
    """What a module says instead of showing its panel on a Slicer older than :data:`MINIMUM_SLICER`, else None. Called
    by the module files, which Slicer 5.8's Python 3.9 must load for it (Testing/test_slicer_modules_load.py)."""
    if tuple(version) >= MINIMUM_SLICER:
        return None
    return (f"SwinSSL needs 3D Slicer {MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or later (this is {version[0]}.{version[1]}, "
            "whose Python is too old for the engine)")


def show_unsupported_slicer(layout) -> bool:
    """On a Slicer older than :data:`MINIMUM_SLICER`: puts :func:`unsupported_slicer`'s sentence in ``layout`` (a module
    widget's, in place of its panel) and returns True; else False. Both module files call it first in ``setup()``."""
    import qt
    import slicer

    message = unsupported_slicer((slicer.app.majorVersion, slicer.app.minorVersion))
    if message:
        label = qt.QLabel(message)
        label.wordWrap = True
        layout.addWidget(label)
        layout.addStretch(1)
    return message is not None


def check_slicer_version(version: tuple[int, int]) -> None:
    message = unsupported_slicer(version)
    if message:
        raise RuntimeError(message)


def prepare_self_test(version: tuple[int, int], requirements: tuple[str, ...] = ENGINE_REQUIREMENTS) -> None:
    """A module's self-test starts here: this Slicer must be supported, and missing requirements are installed without
    asking, as MONAIAuto3DSeg's logic test does (``setupPythonRequirements``). Raises when the Slicer is too old, an
    install fails or Slicer must be restarted, so a self-test fails loudly instead of passing without having run."""
    check_slicer_version(version)
    ensure_engine_requirements(lambda question: True, testing=False, requirements=requirements)


def ensure_engine_requirements(confirm: Callable[[str], bool], testing: bool, requirements: tuple[str, ...] = ENGINE_REQUIREMENTS,
                               busy: Callable[[], ContextManager] = contextlib.nullcontext) -> bool:
    """True when every requirement is met. Otherwise asks ``confirm`` and installs what is missing or at a
    wrong version; never installs while Slicer runs its self-tests (``testing``). Raises RuntimeError when
    an install fails and :class:`RestartRequired` when Slicer must be restarted to use what was installed."""
    unmet = unmet_requirements(requirements)
    if not unmet:
        return True
    listing = "\n".join(f"- {item}" for item in unmet)
    if testing or not confirm(f"SwinSSL needs these Python packages:\n{listing}\n\nInstall them now? (This can take several minutes.)"):
        return False
    torch = [item for item in unmet if item.name == "torch"]
    rest = [item.requirement for item in unmet if item.name != "torch"]
    with busy():  # after the prompt: the question is not asked under a busy cursor
        if torch:
            try:
                import PyTorchUtils  # the PyTorch extension, which this extension depends on
            except ImportError as error:
                raise RuntimeError("install the PyTorch extension (Extension Manager) first: it installs the torch build that matches your GPU") from error
            PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT[len("torch"):])
        if rest:
            import slicer.util

            slicer.util.pip_install(rest)
    still = unmet_requirements(requirements)
    if still:
        raise RuntimeError("these requirements are still not met after installing:\n" + "\n".join(f"- {item}" for item in still))
    stale = stale_imports(requirements)
    if stale:
        raise RestartRequired("restart 3D Slicer to finish installing: " + ", ".join(stale))
    return True


_installing = False  # one install at a time: pip output pumps Qt events, so a second click could start another


def ensure_in_slicer() -> bool:
    """The desktop modules' check before any engine work: Slicer version, requirements, prompt, install.
    Errors are shown in a dialog (slicer.util.tryWithErrorDisplay shows, then re-raises) and give False;
    a click while an install runs gives False at once."""
    import slicer

    global _installing
    if _installing:
        return False
    _installing = True
    try:
        with slicer.util.tryWithErrorDisplay("SwinSSL could not install its Python packages."):
            check_slicer_version((slicer.app.majorVersion, slicer.app.minorVersion))
            return ensure_engine_requirements(slicer.util.confirmOkCancelDisplay, testing=slicer.app.testingEnabled(), busy=slicer.util.WaitCursor)
    except Exception:
        return False
    finally:
        _installing = False

"""The words every face puts on an inpainting preview: panel labels and the hole metrics of a ``preview`` event.

No heavy imports: the Slicer module and the web page read it before the engine's dependencies are installed.
"""

from __future__ import annotations

PANEL_LABELS = {"original": "original", "masked": "masked (holes filled with noise)", "reconstruction": "reconstruction"}


def describe(metrics: dict, unit: str) -> str:
    """'r 0.42, L1 85.3 HU' from {"r", "l1"} (either may be None: 'n/a')."""
    r, l1 = metrics.get("r"), metrics.get("l1")
    return (f"r {'n/a' if r is None else f'{r:.2f}'}, "
            f"L1 {'n/a' if l1 is None else f'{l1:.1f}' if unit == 'HU' else f'{l1:.3f}'} {unit}")


def metrics_text(event: dict) -> str:
    """One line for a ``preview`` event: the reconstruction and the no-learning interpolation inside the holes."""
    if "holes" not in event:
        return ""
    verdict = {True: "beats interpolation", False: "does not beat interpolation yet", None: "not comparable"}[event.get("beats_interpolation")]
    return (f"Inside the holes: reconstruction {describe(event['holes'], event['unit'])}; "
            f"interpolation, no learning: {describe(event['baseline'], event['unit'])} ({verdict})")

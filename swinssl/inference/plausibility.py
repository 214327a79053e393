"""How plausible a segmentation is, from what the engine already computed: each segment's volume (mL), mean
confidence and unsure share, which segments are empty (and whether the model is known to miss them), and which
have a confidence far below the model's own on its validation cases (``metrics.confidence`` of the package;
without it, below the threshold of 'unsure'). Plain data and text: the CLI and every face show the same lines.
No torch import (the faces format these lines in their own process)."""

from __future__ import annotations

from typing import Callable

from swinssl.package import ModelPackage

FAR_BELOW_VALIDATION = 0.15  # mean confidence this much under the validation's is flagged
NO_REFERENCE_FLOOR = 0.6  # without a validation figure: flagged below the default threshold of 'unsure'


def plausibility(volume_ml: dict[str, float], confidence: dict[str, dict], package: ModelPackage) -> dict:
    """{"segments": [{"name", "volume_ml", "mean", "unsure", "validation", "low"}], "empty": [names], "known_misses":
    [names of empty segments the package says it misses], "low_confidence": [names], "reference": "validation" | "threshold" | None}.
    ``confidence`` is the done event's {segment: {"mean", "below"}} ({} when no confidence map was computed)."""
    reference = package.metrics.get("confidence") or {}
    segments, empty, low = [], [], []
    for name, millilitres in volume_ml.items():
        entry = {"name": name, "volume_ml": millilitres}
        if not millilitres:
            empty.append(name)
        if name in confidence:
            expected = reference.get(name)
            floor = expected - FAR_BELOW_VALIDATION if expected is not None else NO_REFERENCE_FLOOR
            entry.update(mean=confidence[name]["mean"], unsure=confidence[name]["below"], validation=expected,
                         low=confidence[name]["mean"] < floor)
            if entry["low"]:
                low.append(name)
        segments.append(entry)
    misses = " ".join(package.trained_on.known_misses).lower()
    known = [name for name in empty if name.lower() in misses or name.lower().replace("_", " ") in misses]
    return {"segments": segments, "empty": empty, "known_misses": known, "low_confidence": low,
            "reference": ("validation" if reference else "threshold") if confidence else None}


def segment_lines(summary: dict, shown: Callable[[str], str] = str) -> list[str]:
    """One line per non-empty segment: "liver: 992 mL, mean confidence 0.90, 5% unsure"; ``shown`` gives the name a
    face shows for a model's segment name (the faces rename known anatomy to Slicer's names)."""
    lines = []
    for entry in summary["segments"]:
        if not entry["volume_ml"]:
            continue
        line = f"{shown(entry['name'])}: {entry['volume_ml']:.0f} mL"
        if "mean" in entry:
            line += f", mean confidence {entry['mean']:.2f}, {entry['unsure']:.0%} unsure"
            if entry["low"]:
                line += f" (LOW: {entry['validation']:.2f} on validation)" if entry["validation"] is not None else " (LOW)"
        lines.append(line)
    return lines


def flag_lines(summary: dict, shown: Callable[[str], str] = str) -> list[str]:
    """What a reader should doubt: empty segments (known misses said so) and confidence far below validation."""
    lines = []
    unexpected = [shown(name) for name in summary["empty"] if name not in summary["known_misses"]]
    if unexpected:
        lines.append(f"Empty (not found): {', '.join(unexpected)}")
    if summary["known_misses"]:
        lines.append(f"Empty, a known miss of this model: {', '.join(map(shown, summary['known_misses']))}")
    if summary["low_confidence"]:
        against = "its validation cases" if summary["reference"] == "validation" else f"{NO_REFERENCE_FLOOR:g} (no validation figure)"
        lines.append(f"Doubtful: the confidence of {', '.join(map(shown, summary['low_confidence']))} is far below {against}; "
                     "is this input the kind the model was trained on?")
    if summary["reference"] is None:
        lines.append("Confidence not computed (ask for the confidence map to check it)")
    return lines


def doubtful(summary: dict) -> bool:
    """Whether the result needs a second look before use: a segment found empty that the model is not known to miss,
    or a confidence far below the model's own."""
    return bool(summary["low_confidence"] or set(summary["empty"]) - set(summary["known_misses"]))


def summary_lines(summary: dict, shown: Callable[[str], str] = str) -> list[str]:
    """Everything a face shows after a run: the segment lines, then the flags (names through ``shown``)."""
    return segment_lines(summary, shown) + flag_lines(summary, shown)

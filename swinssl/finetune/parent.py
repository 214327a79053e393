"""Fine-tuning from a model package (its *parent*): what defines the parent's input is inherited, a setting that
would make the parent's weights not fit is refused before any step runs, and the tuned model is compared with
its parent on the same validation cases, so that correct-and-retrain never makes a model worse unseen.

Orientation needs no inheriting: every model reads its volumes resampled to the same (RAS) axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from swinssl.package import MODEL_JSON, ModelPackage, TrainedOn, load_package
from swinssl.preprocessing.intensity import CT_WINDOW, IntensitySettings

WORSE_BY = 0.01  # a segment counts as worse when its Dice drops by more than this (one Dice point)


def parent_package(init: str | None) -> ModelPackage | None:
    """The model package ``init`` names (a folder with ``model.json``), else None (random, pretraining, bundle, file)."""
    if not init or init == "random" or not (Path(init) / MODEL_JSON).is_file():
        return None
    return load_package(Path(init))


def inherited_settings(package: ModelPackage) -> dict:
    """The fine-tuning settings (:class:`~swinssl.finetune.config.FinetuneConfig` fields) that reproduce ``package``'s input."""
    first = package.channels[0]
    window = _effective(first.intensity()).window
    settings = dict(modality=first.modality, preset=first.preset, window=list(window) if window else None,
                    spacing=list(package.spacing), roi=package.roi, feature_size=package.feature_size,
                    classes=list(package.labels.names), patch_merging=package.patch_merging)
    if len(package.channels) > 1:
        settings["channel_presets"] = [channel.preset for channel in package.channels]
    return settings


def inherit_from_parent(given: dict) -> dict:
    """``given`` (the settings the user gave explicitly) completed with the parent's input settings when
    ``given["init"]`` is a model package; unchanged otherwise. What was given explicitly wins (and is then
    checked by :func:`check_fits_parent`)."""
    package = parent_package(given.get("init"))
    if package is None:
        return dict(given)
    inherited = {key: value for key, value in inherited_settings(package).items() if value is not None}
    if "preset" in given and given["preset"] != inherited["preset"]:  # another preset: the parent's window is not for it
        inherited.pop("window", None)
    return {**inherited, **given}


def tuned_from(parent: ModelPackage, cases: int) -> TrainedOn:
    """What a model tuned from ``parent`` on ``cases`` corrected cases has seen: the parent's region, spacings and
    known misses (kept until a comparison shows them found: the faces show both Dice), and where it came from."""
    source = f"{parent.name} ({parent.trained_on.source or 'source not recorded'}), tuned on {cases} corrected case(s)"
    return TrainedOn(parent.trained_on.region, source, parent.trained_on.spacing_mm, parent.trained_on.known_misses)


def check_fits_parent(config, package: ModelPackage) -> None:
    """Raises ValueError, naming the setting and the parent, when ``config`` cannot start from ``package``'s
    weights: another feature size, number of input channels or patch-merging order, or the parent's classes in
    another order (its outputs would be read as the wrong organs)."""
    where = f"--init {package.path}: the model {package.name!r}"
    if config.feature_size != package.feature_size:
        raise ValueError(f"{where} has feature size {package.feature_size}; --feature-size {config.feature_size} does not fit its "
                         f"weights (leave --feature-size out to keep {package.feature_size}, or start from random weights)")
    if len(config.input_channels()) != len(package.channels):
        raise ValueError(f"{where} takes {len(package.channels)} input channel(s); this run gives {len(config.input_channels())} "
                         "(leave --channel-presets out to keep the model's)")
    if config.patch_merging is not None and config.patch_merging != package.patch_merging:
        raise ValueError(f"{where} was trained with patch merging {package.patch_merging!r}; --patch-merging {config.patch_merging} "
                         "would scramble its weights (leave --patch-merging out)")
    names = list(package.labels.names)
    classes = list(config.classes) if config.classes else None
    if classes is not None and len(classes) == len(names) and classes != names:
        raise ValueError(f"{where} outputs {', '.join(names)} in this order; --classes {' '.join(classes)} would read its outputs as "
                         "other segments (give them in the model's order, or leave --classes out)")


def changed_settings(config, package: ModelPackage) -> list[str]:
    """The input settings of ``config`` that differ from ``package``'s, as "spacing 1.5 1.5 2 (model: 3 3 3)"."""
    changed = []
    for key, theirs in inherited_settings(package).items():
        ours = getattr(config, key)
        same = (list(ours) if isinstance(ours, (list, tuple)) else ours) == theirs if ours is not None and theirs is not None else ours == theirs
        if not same and not (key == "classes" and ours is None):
            changed.append(f"{key} {_shown(ours)} (model: {_shown(theirs)})")
    return changed


def _shown(value) -> str:
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def same_input(config, package: ModelPackage) -> bool:
    """True when ``config`` prepares volumes as ``package`` does (spacing and intensities): the parent's Dice
    on this run's prepared cases is then a like-for-like comparison."""
    spacing_same = np.allclose(config.spacing, package.spacing)
    ours, theirs = [_effective(settings) for settings in config.intensity()], [_effective(c.intensity()) for c in package.channels]
    return bool(spacing_same) and ours == theirs


def _effective(settings: IntensitySettings) -> IntensitySettings:
    """``settings`` with the window it applies written out (a CT channel without one clips at :data:`CT_WINDOW`)."""
    if settings.preset == "ct" and settings.window is None:
        return IntensitySettings("ct", CT_WINDOW, settings.pet_max_suv)
    return IntensitySettings(settings.preset, tuple(float(v) for v in settings.window) if settings.window else None, settings.pet_max_suv)


def value_map(package: ModelPackage, table) -> np.ndarray:
    """uint8 (parent classes + 1,): the parent's output value -> this run's label value of the same name (0 when absent);
    names match as label tables match them ('Liver' == 'liver', 'kidney_right' == 'right kidney')."""
    mapping = np.zeros(package.labels.num_classes, dtype=np.uint8)
    ours = {label.key: label.value for label in table.labels}
    for label in package.labels.labels:
        mapping[label.value] = ours.get(label.key, 0)
    return mapping


def compare_with_parent(parent: dict | None, tuned: dict[str, float], validated_on: str) -> dict | None:
    """{rows: [{segment, parent, tuned}], parent_mean, tuned_mean, worse_segments, worse, cases} from the parent's
    record (``{"name", "dice"}``) and the tuned model's Dice per segment on the same cases; None without a parent
    Dice. Means are over the segments both were scored on."""
    if not parent or parent.get("dice") is None:
        return None
    shared = [name for name in tuned if name in parent["dice"]]
    rows = [{"segment": name, "parent": parent["dice"].get(name), "tuned": tuned.get(name)} for name in dict.fromkeys([*parent["dice"], *tuned])]
    parent_mean = float(np.mean([parent["dice"][n] for n in shared])) if shared else None
    tuned_mean = float(np.mean([tuned[n] for n in shared])) if shared else None
    worse_segments = [n for n in shared if tuned[n] < parent["dice"][n] - WORSE_BY]
    return {"parent": parent["name"], "rows": rows, "parent_mean": parent_mean, "tuned_mean": tuned_mean, "worse_segments": worse_segments,
            "worse": parent_mean is not None and tuned_mean < parent_mean, "validated_on": validated_on}


def dice_kind(validated_on: str) -> str:
    """"training-case Dice" when the model was scored on the cases it learnt from, else "held-out Dice"."""
    return "training-case Dice" if validated_on.startswith("training cases") else "held-out Dice"


def comparison_lines(comparison: dict | None, tuned_name: str) -> list[str]:
    """The verdict first ("WORSE than its parent ..."), then one line per segment: "liver  parent 0.956  tuned 0.812"."""
    if not comparison:
        return []
    kind = dice_kind(comparison["validated_on"])
    parent, means = comparison["parent"], (comparison["parent_mean"], comparison["tuned_mean"])
    if comparison["worse"]:
        verdict = (f"{tuned_name} is WORSE than {parent} on the same cases ({kind}): mean {means[1]:.3f} vs {means[0]:.3f}. "
                   f"Keep using {parent}.")
    elif comparison["worse_segments"]:
        verdict = (f"{tuned_name} is not worse on average than {parent} ({kind}: mean {means[1]:.3f} vs {means[0]:.3f}) but WORSE on "
                   f"{', '.join(comparison['worse_segments'])}.")
    elif means[0] is not None:
        verdict = f"{tuned_name} is not worse than {parent} on the same cases ({kind}): mean {means[1]:.3f} vs {means[0]:.3f}."
    else:
        verdict = f"{tuned_name} and {parent} share no scored segment; they could not be compared."
    rows = [f"{row['segment']}: {parent} {_dice(row['parent'])}, {tuned_name} {_dice(row['tuned'])}" for row in comparison["rows"]]
    return [verdict, *rows]


def _dice(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

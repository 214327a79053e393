"""``swinssl compare-init``: the label-efficiency study of Tang et al. / MONAI's tutorial.

For each N, the same fine-tune (same seed, steps, held-out validation cases) runs from random
weights and from pretrained weights on the first N training cases; the table reports both mean
validation Dice values and their difference.

Out of distribution: with ``ood_folders`` (labelled cases of another modality, e.g. MR when
fine-tuning on CT), each fine-tuned model is also evaluated there, normalised with ``ood_preset``.
Running the study once per pretraining (single-modality, then ``--swinfuse``) gives the SwinFUSE
paper's kind of comparison on one's own data.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from swinssl.finetune.cases import cases_from_folder
from swinssl.finetune.config import FinetuneConfig
from swinssl.finetune.dataset import prepare_case, read_case_labels
from swinssl.finetune.train import run_finetune
from swinssl.finetune.validation import validate
from swinssl.io.atomic import atomic_write_text
from swinssl.io.reader import VolumeError
from swinssl.package import load_package
from swinssl.preprocessing.intensity import IntensitySettings
from swinssl.training.distributed import Runtime, pick_device
from swinssl.weights import choose_patch_merging, read_weights, weights_file_of


def out_of_distribution_dice(package_dir: Path, folders: list[str], preset: str, base: FinetuneConfig) -> tuple[float | None, int]:
    """(mean Dice over classes of a package on the labelled cases in ``folders``, cases used);
    unusable cases are left out. Channels of ``preset`` keep the package's window; others are normalised with that preset."""
    package = load_package(package_dir)
    intensity = tuple(channel.intensity() if channel.preset == preset else IntensitySettings(preset) for channel in package.channels)
    prepared = []
    for folder in folders:
        for case in cases_from_folder(Path(folder)):
            try:
                prepared.append(prepare_case(case, read_case_labels(case), package.labels, intensity, package.spacing, package.roi))
            except VolumeError:
                continue
    if not prepared:
        return None, 0
    scores = validate(package.build_network(), prepared, package.labels, replace(base, roi=package.roi),
                      Runtime(0, 1, pick_device(base.device)))
    return (float(np.mean(list(scores.values()))) if scores else None), len(prepared)


def compare_init(base: FinetuneConfig, pretrained: str, counts: list[int], out: Path,
                 ood_folders: list[str] | None = None, ood_preset: str = "mr") -> list[dict]:
    """Runs 2 x len(counts) fine-tunes under ``out`` and writes ``compare_init.json`` and ``.md``. Both arms are
    built with the patch-merging order of the pretrained weights, so that they differ in their start only."""
    if base.patch_merging is None:
        base = replace(base, patch_merging=choose_patch_merging(read_weights(weights_file_of(pretrained)))[0])
    rows = []
    for count in counts:
        row: dict = {"n": count}
        for label, init in (("scratch", "random"), ("pretrained", pretrained)):
            run_dir = out / f"n{count}_{label}"
            run_finetune(replace(base, out=str(run_dir), init=init, train_cases=count, events=str(out / f"n{count}_{label}.jsonl")), overwrite=True)
            metrics = load_package(run_dir).metrics
            row[f"{label}_dice"] = metrics["mean_dice"]
            row["validated_on"] = metrics["validated_on"]
            if ood_folders:
                row[f"{label}_ood_dice"], row["ood_cases"] = out_of_distribution_dice(run_dir, ood_folders, ood_preset, base)
        row["difference"] = row["pretrained_dice"] - row["scratch_dice"]
        rows.append(row)
    atomic_write_text(out / "compare_init.json", json.dumps({"pretrained": pretrained, "steps": base.steps, "seed": base.seed, "rows": rows}, indent=2))
    atomic_write_text(out / "compare_init.md", markdown(rows, base.steps))
    return rows


def _dice(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(rows: list[dict], steps: int) -> str:
    ood = any("scratch_ood_dice" in r for r in rows)
    header = "| N labelled | scratch Dice | pretrained Dice | difference |" + (" scratch OOD Dice | pretrained OOD Dice |" if ood else "")
    lines = [f"{header} ({steps} steps each)", "|---|---|---|---|" + ("---|---|" if ood else "")]
    for r in rows:
        line = f"| {r['n']} | {r['scratch_dice']:.3f} | {r['pretrained_dice']:.3f} | {r['difference']:+.3f} |"
        if ood:
            line += f" {_dice(r['scratch_ood_dice'])} | {_dice(r['pretrained_ood_dice'])} |"
        lines.append(line)
    return "\n".join(lines) + "\n"

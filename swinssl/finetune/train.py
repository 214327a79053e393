"""The fine-tuning loop: DiceCE on partially labelled crops, sliding-window validation with per-class
Dice, best-model package, and the same events, checkpoints, resume and signal handling as pretraining."""

from __future__ import annotations

import random
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from swinssl import __version__
from swinssl.events import EventLog
from swinssl.finetune.cases import LabelledCase, cases_from_datalist, cases_from_folder, cases_from_scene
from swinssl.finetune.config import FinetuneConfig
from swinssl.finetune.dataset import UNNAMED_PREFIX, PreparedCase, build_label_table, prepare_case, read_case_labels
from swinssl.finetune.loss import partial_dice_ce
from swinssl.finetune.parent import (changed_settings, check_fits_parent, compare_with_parent, comparison_lines, parent_package, same_input,
                                     tuned_from, value_map)
from swinssl.finetune.sampler import LabelledCropSampler, SegmentationBatch
from swinssl.finetune.validation import validate
from swinssl.io.reader import VolumeError
from swinssl.labels.table import LabelTable, normalize_name
from swinssl.network import build_swin_unetr
from swinssl.package import ModelPackage, TrainedOn
from swinssl.summary import duration, loss_table, outputs_block
from swinssl.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from swinssl.training.data import DataSetError
from swinssl.training.distributed import Runtime, autocast_dtype, start_runtime, stop_runtime, use_deterministic_kernels
from swinssl.training.loop import LoopSettings, run_training_loop
from swinssl.training.run_folder import prepare_run_folder
from swinssl.training.schedule import build_optimizer
from swinssl.training.signals import EXIT_OK, EXIT_STOPPED
from swinssl.training.state import TrainState
from swinssl.weights import choose_patch_merging, load_weights, read_weights, weights_file_of


def find_cases(config: FinetuneConfig, extract_root: Path, events: EventLog) -> list[LabelledCase]:
    """Every labelled case of the run's sources; a source that gives none is named in a warning event."""
    cases: list[LabelledCase] = []
    empty = []
    for folder in config.data:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--data {folder}: not a folder")
        found = cases_from_folder(Path(folder))
        empty += [] if found else [folder]
        cases += found
    for datalist in config.datalists:
        cases += cases_from_datalist(Path(datalist))
    for scene in config.scenes:
        found = cases_from_scene(Path(scene), extract_root)
        empty += [] if found else [scene]
        cases += found
    for source in empty:
        events.emit("warning", file=str(source), reason="no labelled case here (no image with a label file or .seg.nrrd beside it); "
                    "it adds nothing to the training")
    if not cases:
        raise DataSetError(f"no labelled cases found in {', '.join(config.data + config.datalists + config.scenes)} "
                           "(MSD dataset.json, <name> + <name>_label(s)/_seg pairs, datalists, .seg.nrrd or .mrb)")
    return cases


def load_cases(config: FinetuneConfig, events: EventLog, extract_root: Path,
               parent: LabelTable | None = None) -> tuple[LabelTable, list[PreparedCase], int]:
    """Reads every case (skipping bad ones with a warning event), builds the label table (``parent``: the table of
    the model the run starts from, see :func:`build_label_table`), prepares arrays."""
    readable = []
    skipped = 0
    for case in find_cases(config, extract_root, events):
        try:
            labels = read_case_labels(case)
            readable.append((case, labels))
            if not case.names and not case.label.name.lower().endswith(".seg.nrrd"):
                events.emit("warning", file=str(case.label), reason=f"no label table names its values: they become {UNNAMED_PREFIX}1, "
                            f"{UNNAMED_PREFIX}2, ... (put a JSON {{value: name}} table in its folder to name them)")
        except VolumeError as error:
            skipped += 1
            events.emit("warning", file=error.source, reason=error.reason)
    if not readable:
        raise DataSetError("none of the labelled cases could be read; see the warnings")
    table = build_label_table([labels for _, labels in readable], config.classes, parent)
    annotated = {normalize_name(name) for _, labels in readable for name in labels.names.values()}
    missing = [name for name in table.names if normalize_name(name) not in annotated]
    if missing:
        events.emit("warning", file=None, reason=f"{', '.join(missing)}: annotated in no case; the model's output for it is kept, not taught")
    prepared = []
    for case, labels in readable:
        try:
            prepared.append(prepare_case(case, labels, table, config.intensity(), config.spacing, config.roi,
                                         warn=lambda file, reason: events.emit("warning", file=file, reason=reason)))
        except VolumeError as error:
            skipped += 1
            events.emit("warning", file=error.source, reason=error.reason)
    if not prepared:
        raise DataSetError("no usable labelled case is left; see the warnings")
    return table, prepared, skipped


def split_cases(cases: list[PreparedCase], config: FinetuneConfig) -> tuple[list[PreparedCase], list[PreparedCase], str]:
    """(training, validation, how): the datalist's validation split, else the last cases held out
    (``val_cases``, default a fifth when there are 3 or more), else validation on the training cases."""
    listed = [c for c in cases if c.split == "validation"]
    if listed:
        return [c for c in cases if c.split != "validation"], listed, "validation split"
    count = config.val_cases if config.val_cases is not None else (max(1, len(cases) // 5) if len(cases) >= 3 else 0)
    if 0 < count < len(cases):
        return cases[:-count], cases[-count:], "held-out cases"
    return cases, cases, "training cases (too few cases to hold any out)"


def resumed_patch_merging(config: FinetuneConfig, checkpoint: dict) -> tuple[str, str]:
    """The order a resumed run was built with: its config's, or (runs from before it was recorded) the checkpoint's flag."""
    if config.patch_merging is not None:
        return config.patch_merging, "the run's config"
    return ("legacy" if checkpoint.get("extra", {}).get("legacy_patch_merging") else "v1.5"), "the run's checkpoint"


def _evaluate_parent(parent: ModelPackage, cases: list[PreparedCase], table: LabelTable, config: FinetuneConfig, runtime: Runtime,
                     events: EventLog, validated_on: str) -> dict:
    """The parent model's Dice per segment on this run's validation cases, as the tuned model will be scored
    (``progress`` events with ``stage`` "validation" and ``model`` "parent" while it runs). No Dice (``dice``
    None, ``reason`` says why) when this run prepares volumes otherwise than the parent: that would not be like for like."""
    record = {"name": parent.name, "path": str(parent.path), "validated_on": validated_on, "dice": None, "reason": None}
    if not same_input(config, parent):
        record["reason"] = "this run's spacing or intensity window differ from the model's, so their Dice are not comparable"
        events.emit("warning", file=str(parent.path), reason=f"{parent.name} is not compared with the tuned model: {record['reason']}")
        return record

    def report(case: int, count: int, window: int, windows: int) -> None:
        events.emit("progress", stage="validation", model="parent", step=0, total=config.steps, case=case, cases=count, window=window,
                    windows=windows)

    network = parent.build_network().to(runtime.device)
    record["dice"] = validate(network, cases, table, replace(config, roi=parent.roi), runtime, progress=report,
                              value_map=value_map(parent, table))
    return record


def _save_package(path: Path, network: torch.nn.Module, table: LabelTable, config: FinetuneConfig, training: dict, metrics: dict,
                  parent: ModelPackage | None) -> Path:
    package = ModelPackage(
        name=config.name or path.name, labels=table, channels=config.input_channels(),
        spacing=config.spacing, roi=config.roi, feature_size=config.feature_size, patch_merging=config.patch_merging,
        training=training, metrics=metrics, trained_on=tuned_from(parent, training.get("cases", 0)) if parent else TrainedOn(),
        backend=parent.backend if parent else "auto",
    )
    package.save(path, network.state_dict())
    return path


def run_finetune(config: FinetuneConfig, resume: bool = False, show_progress: bool = False, overwrite: bool = False,
                 print_summary: bool = False) -> int:
    """Fine-tunes into ``config.out`` (a model package; training state under ``out/training``), in one process or
    under ``torchrun`` (DDP; rank 0 writes events, checkpoints and the package). With ``overwrite`` a previous model
    in ``out`` is set aside until this run's first checkpoint; ``print_summary`` prints the model folder, best Dice
    and time at the end (the CLI)."""
    started = time.monotonic()
    runtime = start_runtime(config.device)
    if runtime.is_main:
        prepare_run_folder(Path(config.out), overwrite and not resume, subfolders=("training",))
    events = EventLog(config.events if runtime.is_main else None, echo_warnings=runtime.is_main)
    try:
        status, state = _finetune(config, resume, show_progress, runtime, events)
        if print_summary and runtime.is_main:
            print("\n".join(_summary(status, state, config, time.monotonic() - started)), flush=True)
        return status
    except Exception as error:
        events.emit("error", message=str(error), kind=type(error).__name__)
        raise
    finally:
        events.close()
        stop_runtime(runtime)


def _summary(status: int, state: TrainState, config: FinetuneConfig, seconds: float) -> list[str]:
    best, best_step = state.extra["best_dice"], state.extra["best_step"]
    if status == EXIT_STOPPED:
        lines = [f"\nFine-tuning stopped at step {state.step} of {config.steps} after {duration(seconds)}; checkpoint written.",
                 f"  continue with: swinssl finetune --out {config.out} --resume"]
    else:
        lines = [f"\nFine-tuning finished: step {state.step} of {config.steps} in {duration(seconds)}."]
    lines += loss_table(state.history, ("total",))
    if best >= 0:
        per_class = ", ".join(f"{name} {value:.3f}" for name, value in state.extra.get("best_per_class", {}).items())
        lines.append(f"  best validation mean Dice {best:.3f} at step {best_step} ({per_class}); the package holds that state")
    comparison = compare_with_parent(state.extra.get("parent"), state.extra.get("best_per_class", {}),
                                     state.extra["parent"]["validated_on"] if state.extra.get("parent") else "")
    lines += [f"  {line}" for line in comparison_lines(comparison, config.name or Path(config.out).name)]
    lines += outputs_block({"model": config.out, "checkpoint": Path(config.out) / "training" / CHECKPOINT_NAME})
    return lines


class SegmentationTask:
    """Fine-tuning as a :class:`swinssl.training.loop.TrainingTask`: labelled crops, partial DiceCE, and every
    ``val_every`` steps a validation shared among the ranks; rank 0 saves the package when the mean Dice improves."""

    loss_names = ("total",)

    def __init__(self, network: torch.nn.Module, state: TrainState, config: FinetuneConfig, runtime: Runtime, amp: torch.dtype | None,
                 sampler: LabelledCropSampler, validation_cases: list[PreparedCase], table: LabelTable, save_best: Callable[[dict], None],
                 events: EventLog) -> None:
        self.network, self.state, self.config, self.runtime, self.amp = network, state, config, runtime, amp
        self.sampler, self.validation_cases, self.table, self.save_best, self.events = sampler, validation_cases, table, save_best, events
        self.validation_s = 0.0
        self.last_validation_s = 0.0  # the latest validation's duration (before the first: the parent's evaluation's)

    def seconds_left(self, step: int) -> float:
        """Validation time still to come after ``step`` (1-based): the validations left times the latest one's duration."""
        steps, every = self.config.steps, self.config.val_every
        later = steps // every - step // every + (1 if steps % every and step < steps else 0)
        return later * self.last_validation_s

    def batch(self, step: int) -> SegmentationBatch:
        return self.sampler.batch(step)

    def train_step(self, batch: SegmentationBatch) -> dict[str, float]:
        device, state = self.runtime.device, self.state
        with torch.autocast(device.type, dtype=self.amp) if self.amp is not None else nullcontext():
            logits = self.network(batch.images.to(device))
        loss = partial_dice_ce(logits, batch.labels.to(device), batch.present.to(device))
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), self.config.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()
        return {"total": float(loss.detach())}

    def after_step(self, step: int, show_status: Callable[[str], None]) -> dict:
        if step % self.config.val_every and step != self.config.steps:
            return {}

        def report(case: int, cases: int, window: int, windows: int) -> None:
            self.events.emit("progress", stage="validation", step=step, total=self.config.steps, case=case, cases=cases, window=window,
                             windows=windows)
            show_status(f"validating case {case}/{cases}, window {window}/{windows}")

        started = time.monotonic()
        dice = validate(self.state.model, self.validation_cases, self.table, self.config, self.runtime, progress=report)
        self.last_validation_s = time.monotonic() - started
        self.validation_s += self.last_validation_s
        mean = float(np.mean(list(dice.values()))) if dice else 0.0
        fields = dict(val_dice=dice, val_mean_dice=mean)
        if mean > self.state.extra["best_dice"]:
            self.state.extra.update(best_dice=mean, best_step=step, best_per_class=dice)
            self.save_best({"mean_dice": mean, "dice": dice, "step": step})
            fields["best"] = True
        return fields


def _finetune(config: FinetuneConfig, resume: bool, show_progress: bool, runtime: Runtime, events: EventLog) -> tuple[int, TrainState]:
    """Returns (exit status, the training state)."""
    out = Path(config.out)
    training_dir = out / "training"
    device = runtime.device
    use_deterministic_kernels(device, config.deterministic)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    init_path = None if config.init == "random" else weights_file_of(config.init)  # a bad --init fails before minutes of case preparation
    parent = parent_package(config.init)
    if parent is not None:
        check_fits_parent(config, parent)  # before any case is read or step run
    checkpoint = load_checkpoint(training_dir / CHECKPOINT_NAME) if resume else None
    source = read_weights(init_path) if init_path is not None and not resume else None
    merging = resumed_patch_merging(config, checkpoint) if resume else choose_patch_merging(source, config.patch_merging)
    config.patch_merging = merging[0]
    with tempfile.TemporaryDirectory(prefix="swinssl-scenes-") as extract_root:
        table, cases, skipped = load_cases(config, events, Path(extract_root), parent.labels if parent is not None else None)
    training_cases, validation_cases, validated_on = split_cases(cases, config)
    if config.train_cases is not None:
        if config.train_cases > len(training_cases):
            raise DataSetError(f"--train-cases {config.train_cases}: only {len(training_cases)} training case(s) available")
        training_cases = training_cases[: config.train_cases]

    network = build_swin_unetr(len(config.input_channels()), table.num_classes, config.feature_size, merging[0] == "legacy").to(device)
    init_report = load_weights(network, source, merging, config.encoder_only) if source is not None else None
    optimizer, scheduler = build_optimizer(network, config.lr, config.weight_decay, config.warmup, config.steps)
    amp = autocast_dtype(device, config.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    state = TrainState("finetune", network, optimizer, scheduler, scaler,
                       extra={"best_dice": -1.0, "best_step": 0, "labels": table.to_list()})
    if checkpoint is not None:
        state.restore(checkpoint)
    if parent is not None:
        changed = changed_settings(config, parent)
        if changed and not resume:
            events.emit("warning", file=str(parent.path), reason=f"this run changes the input of {parent.name}: {'; '.join(changed)}")
    trained = network
    if runtime.distributed:
        trained = DistributedDataParallel(network, device_ids=[device] if device.type == "cuda" else None)
    if runtime.is_main:
        config.save(training_dir / "config.json")
    training_summary = {
        "cases": len(training_cases), "validation_cases": len(validation_cases), "validated_on": validated_on, "skipped": skipped,
        "case_names": [c.name for c in cases], "init": config.init, "init_load": init_report.summary() if init_report else None,
        "steps": config.steps, "spacing": list(config.spacing), "swinssl_version": __version__,
        "patch_merging": f"{merging[0]} ({merging[1]})", "processes": runtime.world_size,
    }
    events.emit("start", task="finetune", config=config.to_dict(), labels=table.names, cases=len(training_cases),
                validation_cases=len(validation_cases), validated_on=validated_on, skipped=skipped, device=str(device),
                world_size=runtime.world_size, start_step=state.step, resumed=resume, init=training_summary["init_load"],
                patch_merging={"order": merging[0], "reason": merging[1]})
    parent_seconds = 0.0
    if parent is not None and "parent" not in state.extra:  # a resumed run keeps the evaluation it made at its start
        started = time.monotonic()
        state.extra["parent"] = _evaluate_parent(parent, validation_cases, table, config, runtime, events, validated_on)
        parent_seconds = time.monotonic() - started
    training_summary["parent"] = state.extra.get("parent")

    def save_best(metrics: dict) -> None:
        if runtime.is_main:
            metrics.update(validated_on=validated_on, note="Dice on the validation cases named in training.case_names; not a benchmark",
                           comparison=compare_with_parent(state.extra.get("parent"), metrics["dice"], validated_on))
            _save_package(out, network, table, config, training_summary, metrics, parent)

    sampler = LabelledCropSampler(training_cases, config.roi, config.batch_size, config.seed, runtime.rank, sampling=config.crop_sampling)
    task = SegmentationTask(trained, state, config, runtime, amp, sampler, validation_cases, table, save_best, events)
    task.last_validation_s = parent_seconds  # the first estimate of a validation's time, for the ETA
    settings = LoopSettings(config.steps, config.batch_size, config.checkpoint_every, training_dir / CHECKPOINT_NAME, out, config.to_dict(),
                            stop_at=config.stop_at, stop_file=config.stop_file)
    loop_started = time.monotonic()
    if run_training_loop(state, task, settings, runtime, events, show_progress):
        return EXIT_STOPPED, state
    loop_s = time.monotonic() - loop_started
    events.emit("done", step=state.step, outputs={"model": out, "checkpoint": training_dir / CHECKPOINT_NAME},
                best_mean_dice=state.extra["best_dice"], best_step=state.extra["best_step"], parent=state.extra.get("parent"),
                comparison=compare_with_parent(state.extra.get("parent"), state.extra.get("best_per_class", {}), validated_on),
                validation_s=round(task.validation_s, 2), validation_share=round(task.validation_s / loop_s, 3) if loop_s else 0.0)
    return EXIT_OK, state

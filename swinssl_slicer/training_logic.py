"""Pretraining and fine-tuning runs driven from an MRML scene, without Qt.

Losses stream into a bounded table node, one update per poll (:mod:`swinssl_slicer.loss_table`; one table per
run folder, so a resumed run goes on in the same table) plotted by a chart node; each ``preview`` event loads the
original / masked / reconstructed crops into three volume nodes that are reused (replaced), not piled up. Nodes are looked up in the scene at each
event, so a scene closed during a run gets fresh nodes instead of errors. Scene cases are exported as
NRRD volume + .seg.nrrd pairs for ``swinssl finetune --scenes``.

Stop is graceful on every platform (a stop-request file; the engine checkpoints and exits 3); a run's
outcome comes from its own events (see :mod:`swinssl.runner`).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from swinssl_slicer.engine import engine_process, ensure_engine_on_path
from swinssl_slicer.loss_table import RUN_ATTRIBUTE, append_rows, find_or_create
from swinssl_slicer.mrml_io import nodes_by_class, read_volume, same_parent_transform, write_segmentation, write_volume

ensure_engine_on_path()

from swinssl.models import models_dir  # noqa: E402

PREVIEW_KINDS = ("original", "masked", "reconstruction")
DEFAULT_TUNING_STEPS = 50  # correct and retrain: minutes on a CPU (the demo model: about 6 s a step on 2 cores, measured), not hours
TUNED_NAME = re.compile(r"^(?P<base>.+?)-tuned(?:-(?P<version>\d+))?$")
PREVIEW_ATTRIBUTE = "SwinSSL.Preview"


if TYPE_CHECKING:  # the engine's runner needs psutil, installed with the engine's requirements
    from swinssl.runner import EngineProcess


@dataclass
class TrainingRun:
    kind: str  # "pretrain" or "finetune"
    engine: EngineProcess
    out: Path
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    dice: dict = field(default_factory=dict)
    validated_on: str = ""  # a fine-tune's start event: which cases its Dice is measured on (see dice_label)
    messages: list[str] = field(default_factory=list)
    error: str | None = None
    table_node_id: str | None = None
    chart_node_id: str | None = None
    preview_step: int | None = None
    validation: str | None = None  # "validating case 1 of 2: window 5 of 12" while a fine-tune validates, else None
    preparing: str | None = None  # "preparing volumes: 12 of 64" while pretraining builds its cache, else None
    show_plot: bool = False  # set at the run's first progress event (Resume included); the face shows the chart and clears it
    show_previews: bool = False  # set at the run's first preview; the face arranges the views once and clears it
    install: Path | None = None  # where the finished model is installed (weights and model.json only); None: ``out`` is the model
    comparison: dict | None = None  # the tuned model against the model it started from, on the same cases (the done event's)
    eta_at: float | None = None  # time.monotonic() when ``eta_s`` was reported: the ETA counts down through a validation
    temp_folders: list[Path] = field(default_factory=list)  # its event log's folder, the cases exported for it: removed when it ends

    def progress_text(self) -> str:
        """"step 3 of 10, about 2 min left", and during a validation ", validating case 1 of 2: window 5 of 12";
        before the first step, while the volumes are prepared: "preparing volumes: 12 of 64, about 1 min left"."""
        if self.preparing:
            return self.preparing + _time_left(self.eta_s)
        eta = self.eta_s if self.eta_s is None or self.eta_at is None else max(1.0, self.eta_s - (time.monotonic() - self.eta_at))
        return f"step {self.step} of {self.total}{_time_left(eta)}" + (f", {self.validation}" if self.validation else "")

    @property
    def model_folder(self) -> Path:
        """The model this run makes: the installed copy, else the run folder."""
        return self.install or self.out

    @property
    def dice_label(self) -> str:
        """"training-case Dice" when the run scores the cases it learns from (too few to hold any out), "held-out Dice"
        otherwise; "Dice" before the start event says which."""
        from swinssl.finetune.parent import dice_kind

        return dice_kind(self.validated_on) if self.validated_on else "Dice"

    def comparison_lines(self) -> list[str]:
        """The verdict against the parent model, then both Dice per segment; empty when not fine-tuned from a model."""
        from swinssl.finetune.parent import comparison_lines

        return comparison_lines(self.comparison, self.model_folder.name)

    def status(self) -> str | None:
        """None while running; else one line for the user, from the engine's own final event."""
        outcome = self.engine.outcome
        if outcome is None:
            return None
        if outcome == "done":
            verdict = self.comparison_lines()[:1]
            return f"Finished: {self.model_folder}" + (f". {verdict[0]}" if verdict else "")
        if outcome == "stopped":
            return f"Stopped at step {self.step} of {self.total}; a checkpoint was written and Resume continues."
        if outcome == "cancelled":
            return "Cancelled."
        return f"Failed: {self.error or self.engine.log_tail(800) or f'the engine ended without reporting (exit {self.engine.exit_code})'}"


def _time_left(seconds: float | None) -> str:
    if not seconds:
        return ""
    return f", about {seconds:.0f} s left" if seconds < 90 else f", about {seconds / 60:.0f} min left"


def count_cases(folder: Path) -> int:
    """Cases (``.seg.nrrd`` files) in a training-set folder; 0 when it does not exist yet."""
    return len(list(Path(folder).glob("*.seg.nrrd"))) if Path(folder).is_dir() else 0


def default_training_set() -> Path:
    """Where "Add to training set" writes by default: ``training-set/`` beside the models folder."""
    return models_dir().parent / "training-set"


def tuned_version(name: str) -> tuple[str, int]:
    """("demo-organs", 2) for "demo-organs-tuned-2" ("-tuned" alone is version 1); (name, 0) for a model that is no tuned version."""
    match = TUNED_NAME.match(name)
    return (match["base"], int(match["version"] or 1)) if match else (name, 0)


def parents_first(packages: list) -> list:
    """``packages`` with each tuned version after the model it came from (``demo-organs``, ``demo-organs-tuned-1``,
    ``-tuned-2``, ...), so that a face preselecting the first never preselects a tuned model over its parent."""
    return sorted(packages, key=lambda package: tuned_version(package.name))


def tuning_verdict(package) -> str:
    """For a model made by correct-and-retrain, how it compared with the model it started from ("... is WORSE than
    demo-organs on the same cases (training-case Dice): ..."); "" for any other model."""
    from swinssl.finetune.parent import comparison_lines

    return next(iter(comparison_lines(package.metrics.get("comparison"), package.name)), "")


@dataclass(frozen=True)
class TuningPlan:
    """Correct and retrain: ``parent`` fine-tuned on corrected cases into a new version ``name`` (``<base>-tuned-<n>``),
    installed beside it. The engine inherits everything that defines the parent's input; shown here."""

    name: str
    parent: str
    init: str
    classes: list[str]
    spacing: tuple[float, float, float]
    roi: int
    feature_size: int


def tuning_plan(model: str | Path, taken: list[str] = ()) -> TuningPlan:
    """The plan for ``model`` (a package folder); ``taken``: model and run names in use, so that the version is new."""
    from swinssl.package import load_package

    package = load_package(Path(model))
    base = tuned_version(package.name)[0]
    number = 1 + max([version for other, version in map(tuned_version, taken) if other in (base, safe_name(base))], default=0)
    return TuningPlan(safe_name(f"{base}-tuned-{number}"), package.name, str(package.path), list(package.labels.names), package.spacing,
                      package.roi, package.feature_size)


def safe_name(name: str) -> str:
    """``name`` as a file or folder name: letters, digits, ``_ . -`` only ("case" when nothing is left)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "case"


class TrainingLogic:
    """Starts and follows training runs for ``scene``. ``python`` runs the engine (PythonSlicer inside
    Slicer); ``temp_root`` holds each run's event file and log (Slicer's temporary folder inside Slicer),
    outside the run folder, which ``--overwrite`` sets aside."""

    def __init__(self, scene, python: str | None = None, temp_root: Path | None = None, runs_root: Path | None = None) -> None:
        self.scene = scene
        self.python = python
        self.temp_root = temp_root
        self.runs_root = runs_root

    def runs_folder(self) -> Path:
        """Where fine-tuning runs keep their checkpoints (``runs/`` beside the models folder unless given); the
        models folder receives the finished model only."""
        return Path(self.runs_root) if self.runs_root is not None else models_dir().parent / "runs"

    @staticmethod
    def holds_run(out: Path, kind: str) -> bool:
        """True when ``out`` has a previous pretraining (``kind`` "pretrain") or model ("finetune"): starting
        anew there needs ``overwrite``."""
        from swinssl.training.run_folder import FINETUNE_MARKERS, PRETRAIN_MARKERS, existing_run

        return existing_run(Path(out), PRETRAIN_MARKERS if kind == "pretrain" else FINETUNE_MARKERS) is not None

    @staticmethod
    def refuse_if_busy(out: Path) -> None:
        """ValueError naming the live run (the engine's :class:`~swinssl.training.run_folder.RunFolderLock`) that writes
        into ``out`` now: from another Slicer, the web app or the command line. Checked before anything starts."""
        from swinssl.training.run_folder import describe_owner, lock_owner

        owner = lock_owner(Path(out))
        if owner is not None:
            raise ValueError(f"{out} is in use by {describe_owner(owner)}: wait for that run to end, or stop it where it was "
                             "started (Stop checkpoints it; Resume then continues it here), or choose another folder")

    # --- starting -----------------------------------------------------------------------------
    def start_pretraining(self, data_folders: list[str], out: Path, preset: str = "ct", roi: int = 96, feature_size: int = 48,
                          steps: int = 1000, batch_size: int = 2, loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                          preview_every: int = 100, device: str = "auto", resume: bool = False, extra: list[str] | None = None,
                          overwrite: bool = False) -> TrainingRun:
        if str(out) in ("", "."):
            raise ValueError("choose an output folder for the run")
        if resume:
            arguments = ["pretrain", "--out", str(out), "--resume", "--steps", str(steps)]
        else:
            if not data_folders:
                raise ValueError("choose at least one data folder")
            arguments = ["pretrain", "--data", *data_folders, "--out", str(out), "--preset", preset, "--roi", str(roi),
                         "--feature-size", str(feature_size), "--steps", str(steps), "--batch-size", str(batch_size),
                         "--loss-weights", *map(str, loss_weights), "--preview-every", str(preview_every), "--device", device]
            arguments += ["--overwrite"] if overwrite else []
        return self._start("pretrain", arguments + list(extra or []), out)

    def start_finetuning(self, out: Path, data_folders: list[str] = (), scenes: list[str] = (), init: str = "random",
                         classes: list[str] | None = None, roi: int | None = None, feature_size: int | None = None, steps: int = 1000,
                         device: str = "auto", extra: list[str] | None = None, overwrite: bool = False, resume: bool = False) -> TrainingRun:
        """Fine-tunes into the run folder ``out`` (a model package with its checkpoint). With ``resume`` the run in
        ``out`` continues from its checkpoint (up to ``steps``). ``roi``, ``feature_size`` and ``classes`` left None
        are the engine's: those of ``init`` when it is a model package, else its defaults (96, 48, every name found)."""
        if resume:
            return self._start("finetune", ["finetune", "--out", str(out), "--resume", "--steps", str(steps)] + list(extra or []), out)
        if not data_folders and not scenes:
            raise ValueError("choose labelled cases: scene pairs, folders or .mrb files")
        arguments = ["finetune", "--out", str(out), "--init", init, "--steps", str(steps), "--device", device]
        arguments += ["--roi", str(roi)] if roi is not None else []
        arguments += ["--feature-size", str(feature_size)] if feature_size is not None else []
        arguments += (["--data", *data_folders] if data_folders else []) + (["--scenes", *scenes] if scenes else [])
        arguments += ["--classes", *classes] if classes else []
        arguments += ["--overwrite"] if overwrite else []
        return self._start("finetune", arguments + list(extra or []), out)

    def default_model_folder(self, name: str) -> Path:
        return models_dir() / safe_name(name)

    def run_folder(self, model_name: str) -> Path:
        """Where fine-tuning ``model_name`` from the scene keeps its checkpoints (:meth:`runs_folder`)."""
        return self.runs_folder() / safe_name(model_name)

    def start_finetuning_from_scene(self, model_name: str, pairs: list[tuple], sources: list[str], init: str | Path = "random",
                                    classes: list[str] | None = None, roi: int | None = None, feature_size: int | None = None,
                                    steps: int = 1000, device: str = "auto", extra: list[str] | None = None,
                                    overwrite: bool = False) -> TrainingRun:
        """Fine-tunes ``model_name`` (run folder under :meth:`runs_folder`, installed in the models folder when done)
        from scene (volume, segmentation) pairs, which are exported first, and ``sources``: labelled-case folders,
        ``.mrb`` files or folders of .seg.nrrd. A model or run of that name is replaced only with ``overwrite`` (the
        face asked); else ValueError before anything is exported or started."""
        if str(init) != "random" and (str(init) in ("", ".") or not Path(init).exists()):
            raise ValueError(f"initial weights not found: {init!r} (untick 'Initialise from' for random weights)")
        out = self.run_folder(model_name)
        self.refuse_if_busy(out)  # before the cases are exported
        held = [where for where, folder in (("an installed model", self.default_model_folder(model_name)), ("a fine-tuning run", out))
                if self.holds_run(folder, "finetune")]
        if held and not overwrite:
            raise ValueError(f"{' and '.join(held)} named {safe_name(model_name)!r} exist{'s' if len(held) == 1 else ''}: "
                             "choose another model name (nothing was replaced)")
        cases = Path(tempfile.mkdtemp(prefix="SwinSSL-cases-", dir=self._temp_folder()))  # not in ``out``: --overwrite sets that aside
        folders = [s for s in sources if Path(s).is_dir() and not any(Path(s).glob("*.seg.nrrd"))]
        try:
            scenes = [str(self.export_scene_cases(pairs, cases)[0].parent)] if pairs else []
            scenes += [s for s in sources if s not in folders]
            run = self.start_finetuning(out, folders, scenes, str(init), classes, roi, feature_size, steps, device, extra, overwrite)
        except Exception:
            shutil.rmtree(cases, ignore_errors=True)
            raise
        run.temp_folders.append(cases)
        run.install = self.default_model_folder(model_name)
        return run

    def taken_names(self) -> list[str]:
        """Names of the installed models and of the fine-tuning runs: a new version takes none of them."""
        folders = [folder for root in (models_dir(), self.runs_folder()) if root.is_dir() for folder in root.iterdir()]
        from swinssl.models import list_packages

        return [folder.name for folder in folders] + [package.name for package in list_packages()]

    def stopped_tuning(self, model: str | Path) -> Path:
        """The run folder of the latest version of ``model`` that was stopped before it finished (has a checkpoint, not installed)."""
        from swinssl.package import load_package

        base = tuned_version(load_package(Path(model)).name)[0]
        runs = [run for run in self.runs_folder().glob(f"{safe_name(base)}-tuned*") if tuned_version(run.name)[0] == safe_name(base)
                and (run / "training" / "checkpoint.pt").is_file() and not (self.default_model_folder(run.name) / "model.json").is_file()]
        if not runs:
            raise ValueError(f"no stopped fine-tuning of {base} to resume in {self.runs_folder()}")
        return max(runs, key=lambda run: tuned_version(run.name)[1])

    def start_tuning(self, model: str | Path, cases: Path, steps: int = DEFAULT_TUNING_STEPS, device: str = "auto", resume: bool = False,
                     extra: list[str] | None = None) -> TrainingRun:
        """Correct and retrain: fine-tunes ``model`` on the training set ``cases`` into a new version (:func:`tuning_plan`),
        never replacing a model; the engine keeps the model's input settings and scores both models on the same
        cases. The run folder keeps the checkpoint; the models folder receives the weights when it is done.
        ``resume`` continues the latest stopped version (:meth:`stopped_tuning`)."""
        if resume:
            out = self.stopped_tuning(model)
            run = self.start_finetuning(out, steps=steps, resume=True, extra=extra)
        else:
            if not count_cases(cases):
                raise ValueError(f"the training set {cases} is empty: correct a segmentation and click 'Add to training set' first")
            plan = tuning_plan(model, self.taken_names())
            out = self.runs_folder() / plan.name
            run = self.start_finetuning(out, scenes=[str(cases)], init=plan.init, steps=steps, device=device,
                                        extra=["--name", plan.name, *(extra or [])])
        run.install = self.default_model_folder(out.name)
        return run

    def _temp_folder(self) -> Path | None:
        if self.temp_root is not None:
            Path(self.temp_root).mkdir(parents=True, exist_ok=True)
        return self.temp_root

    def _start(self, kind: str, arguments: list[str], out: Path) -> TrainingRun:
        self.refuse_if_busy(out)
        folder = Path(tempfile.mkdtemp(prefix=f"SwinSSL-{kind}-", dir=self._temp_folder()))
        try:
            engine = engine_process().start(arguments, folder / "events.jsonl", self.python, stoppable=True)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return TrainingRun(kind, engine, out, temp_folders=[folder])

    # --- while running ------------------------------------------------------------------------
    def poll(self, run: TrainingRun) -> list[dict]:
        """Reads new events: progress into the loss table, previews into volume nodes, messages. Once the run has
        ended (every event read), its temporary folders are removed."""
        ended = not run.engine.running  # checked first: an engine that has exited wrote its last event before this read
        events = run.engine.poll()
        steps = []  # this poll's progress events: one table update (one plot re-render) for all of them
        for event in events:
            kind = event["event"]
            if kind == "start":
                run.validated_on = event.get("validated_on", "")
            elif kind == "cache":
                run.preparing = f"preparing volumes: {event['done']} of {event['total']}"
                run.eta_s = event.get("eta_s")
            elif kind == "progress" and event.get("stage") == "validation":
                whose = "the starting model on " if event.get("model") == "parent" else ""
                run.validation = (f"validating {whose}case {event['case']} of {event['cases']}: "
                                  f"window {event['window']} of {event['windows']}")
                run.total = run.total or event["total"]
            elif kind == "progress":
                run.validation = run.preparing = None
                run.step, run.total, run.eta_s, run.eta_at = event["step"], event["total"], event.get("eta_s"), time.monotonic()
                steps.append(event)
                if event.get("val_dice"):
                    run.dice = event["val_dice"]
            elif kind == "preview":
                run.show_previews = run.show_previews or run.preview_step is None or len(self.preview_nodes()) < len(PREVIEW_KINDS)
                self.load_preview(event["paths"], event["step"])
                run.preview_step = event["step"]
            elif kind in ("warning", "stopped"):
                run.messages.append(f"{kind}: {event.get('reason')}" + (f" ({event['file']})" if event.get("file") else ""))
            elif kind == "error":
                run.error = event["message"]
            elif kind == "done":
                run.comparison = event.get("comparison")
                if run.install is not None:
                    self.install(run)
        if steps:
            run.show_plot = run.show_plot or run.chart_node_id is None or self.scene.GetNodeByID(run.chart_node_id) is None
            self._append_losses(run, steps)
        if ended:
            self._remove_temporary(run)
        return events

    @staticmethod
    def _remove_temporary(run: TrainingRun) -> None:
        """Removes the ended run's event log and exported cases (patient data); a failure's log tail is kept first."""
        if run.engine.outcome == "failed" and not run.error:
            run.error = run.engine.log_tail(800) or None
        for folder in run.temp_folders:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def install(run: TrainingRun) -> Path:
        """Installs the finished model of ``run`` in the models folder: model.json and model.safetensors only (the
        checkpoint stays in the run folder). Called from a face's poll (Slicer's GUI thread): the engine wrote these
        weights from the network it trained, so they are copied without importing torch to load them again."""
        from swinssl.models import import_model

        replaced = (run.install / "model.json").is_file()
        import_model(run.out, run.install.parent, run.install.name, check_weights=False)
        if replaced:
            run.messages.append(f"replaced the installed model {run.install.name} with this run's")
        return run.install

    def stop(self, run: TrainingRun) -> None:
        """Graceful, on every platform: the run finishes its step, writes a checkpoint and can be resumed."""
        run.engine.stop()

    def cancel(self, run: TrainingRun) -> None:
        run.engine.cancel()
        self._remove_temporary(run)

    def _append_losses(self, run: TrainingRun, steps: list[dict]) -> None:
        """The losses of ``steps`` (progress events) into the run's table, in one update (see :mod:`swinssl_slicer.loss_table`)."""
        columns = list(steps[0].get("losses") or {}) if run.kind == "pretrain" else ["total", "val_mean_dice"]
        table_node, chart = find_or_create(self.scene, run.out, run.kind, columns, run.table_node_id, run.chart_node_id)
        run.table_node_id, run.chart_node_id = table_node.GetID(), chart.GetID()
        rows = []
        for event in steps:
            values = dict(event.get("losses") or {})
            if "val_mean_dice" in event:
                values["val_mean_dice"] = event["val_mean_dice"]
            rows.append((event["step"], values))
        append_rows(table_node, columns, rows)

    def preview_nodes(self) -> dict:
        """The preview volume nodes in the scene by kind (original, masked, reconstruction)."""
        return {n.GetAttribute(PREVIEW_ATTRIBUTE): n for n in nodes_by_class(self.scene, "vtkMRMLScalarVolumeNode") if n.GetAttribute(PREVIEW_ATTRIBUTE)}

    def load_preview(self, paths: dict, step: int) -> list:
        """Loads the three preview crops into the same three volume nodes every time; returns them."""
        nodes, existing = [], self.preview_nodes()
        for kind in PREVIEW_KINDS:
            node = read_volume(self.scene, Path(paths[kind]), f"SwinSSL preview {kind}", existing.get(kind))
            node.SetAttribute(PREVIEW_ATTRIBUTE, kind)
            node.SetAttribute("SwinSSL.PreviewStep", str(step))
            nodes.append(node)
        return nodes

    # --- scene export -------------------------------------------------------------------------
    def export_scene_cases(self, pairs: list[tuple], folder: Path, allow_other_source: bool = False) -> list[Path]:
        """Writes each (volume node, segmentation node) as ``<name>.nrrd`` + ``<name>.seg.nrrd`` (segment names,
        colours and geometry kept, labelmap on the volume's grid), next to cases already in ``folder``.
        Returns the .seg.nrrd paths. Nothing is written when a segmentation was made on another volume or is filed
        under another study (:class:`~swinssl_slicer.case_pairing.PairingError`); ``allow_other_source``: the user
        confirmed such a pair whose segmentation lies on the volume's own grid."""
        from swinssl_slicer.case_pairing import PairingError, pairing_problem
        from swinssl_slicer.volume_reading import check_source_files  # SimpleITK: not needed to list cases

        for volume, segmentation in pairs:
            same_parent_transform([volume, segmentation])
            problem = pairing_problem(volume, segmentation)
            if problem is not None and not (allow_other_source and problem.same_grid):
                raise PairingError(problem)
        check_source_files([volume for volume, _ in pairs])  # read from a file the engine would refuse (truncated, NaN)
        written, used = [], set()
        for volume, segmentation in pairs:
            stem = safe_name(volume.GetName())
            while stem in used or (folder / f"{stem}.seg.nrrd").exists():  # never replaces a case saved before
                stem += "_1"
            used.add(stem)
            write_volume(volume, folder / f"{stem}.nrrd")
            written.append(write_segmentation(segmentation, folder / f"{stem}.seg.nrrd", reference_volume=volume))
        return written

"""Pretraining and fine-tuning runs driven from an MRML scene, without Qt.

Losses stream into a table node (one per run folder, so a resumed run goes on in the same table)
plotted by a chart node; each ``preview`` event loads the original / masked / reconstructed crops into
three volume nodes that are reused (replaced), not piled up. Nodes are looked up in the scene at each
event, so a scene closed during a run gets fresh nodes instead of errors. Scene cases are exported as
NRRD volume + .seg.nrrd pairs for ``swinssl finetune --scenes``.

Stop is graceful on every platform (a stop-request file; the engine checkpoints and exits 3); a run's
outcome comes from its own events (see :mod:`swinssl.runner`).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import vtk

from swinssl_slicer.engine import engine_process, ensure_engine_on_path
from swinssl_slicer.mrml_io import nodes_by_class, read_volume, same_parent_transform, write_segmentation, write_volume

ensure_engine_on_path()

from swinssl.models import models_dir  # noqa: E402

PREVIEW_KINDS = ("original", "masked", "reconstruction")
PREVIEW_ATTRIBUTE = "SwinSSL.Preview"
RUN_ATTRIBUTE = "SwinSSL.RunFolder"


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
    messages: list[str] = field(default_factory=list)
    error: str | None = None
    table_node_id: str | None = None
    chart_node_id: str | None = None
    preview_step: int | None = None
    validation: str | None = None  # "validating case 1 of 2: window 5 of 12" while a fine-tune validates, else None
    preparing: str | None = None  # "preparing volumes: 12 of 64" while pretraining builds its cache, else None
    show_plot: bool = False  # set at the run's first progress event (Resume included); the face shows the chart and clears it
    show_previews: bool = False  # set at the run's first preview; the face arranges the views once and clears it

    def progress_text(self) -> str:
        """"step 3 of 10, about 2 min left", and during a validation ", validating case 1 of 2: window 5 of 12";
        before the first step, while the volumes are prepared: "preparing volumes: 12 of 64, about 1 min left"."""
        if self.preparing:
            return self.preparing + _time_left(self.eta_s)
        return f"step {self.step} of {self.total}{_time_left(self.eta_s)}" + (f", {self.validation}" if self.validation else "")

    def status(self) -> str | None:
        """None while running; else one line for the user, from the engine's own final event."""
        outcome = self.engine.outcome
        if outcome is None:
            return None
        if outcome == "done":
            return f"Finished: {self.out}"
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


@dataclass(frozen=True)
class TuningPlan:
    """Fine-tuning a model on corrected cases: same architecture and classes, into ``<model>-tuned``."""

    name: str
    init: str
    classes: list[str]
    roi: int
    feature_size: int


def tuning_plan(model: str | Path) -> TuningPlan:
    from swinssl.package import load_package

    package = load_package(Path(model))
    return TuningPlan(f"{package.name}-tuned", str(package.path), [label.name for label in package.labels.labels], package.roi,
                      package.feature_size)


def safe_name(name: str) -> str:
    """``name`` as a file or folder name: letters, digits, ``_ . -`` only ("case" when nothing is left)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "case"


class TrainingLogic:
    """Starts and follows training runs for ``scene``. ``python`` runs the engine (PythonSlicer inside
    Slicer); ``temp_root`` holds each run's event file and log (Slicer's temporary folder inside Slicer),
    outside the run folder, which ``--overwrite`` sets aside."""

    def __init__(self, scene, python: str | None = None, temp_root: Path | None = None) -> None:
        self.scene = scene
        self.python = python
        self.temp_root = temp_root

    @staticmethod
    def holds_run(out: Path, kind: str) -> bool:
        """True when ``out`` has a previous pretraining (``kind`` "pretrain") or model ("finetune"): starting
        anew there needs ``overwrite``."""
        from swinssl.training.run_folder import FINETUNE_MARKERS, PRETRAIN_MARKERS, existing_run

        return existing_run(Path(out), PRETRAIN_MARKERS if kind == "pretrain" else FINETUNE_MARKERS) is not None

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
                         classes: list[str] | None = None, roi: int = 96, feature_size: int = 48, steps: int = 1000,
                         device: str = "auto", extra: list[str] | None = None, overwrite: bool = False, resume: bool = False) -> TrainingRun:
        """Fine-tunes into ``out``; by default under the models folder, so SwinSSLSegment lists the result. With
        ``resume`` the run in ``out`` continues from its checkpoint (up to ``steps``)."""
        if resume:
            return self._start("finetune", ["finetune", "--out", str(out), "--resume", "--steps", str(steps)] + list(extra or []), out)
        if not data_folders and not scenes:
            raise ValueError("choose labelled cases: scene pairs, folders or .mrb files")
        arguments = ["finetune", "--out", str(out), "--init", init, "--roi", str(roi), "--feature-size", str(feature_size),
                     "--steps", str(steps), "--device", device]
        arguments += (["--data", *data_folders] if data_folders else []) + (["--scenes", *scenes] if scenes else [])
        arguments += ["--classes", *classes] if classes else []
        arguments += ["--overwrite"] if overwrite else []
        return self._start("finetune", arguments + list(extra or []), out)

    def default_model_folder(self, name: str) -> Path:
        return models_dir() / safe_name(name)

    def start_finetuning_from_scene(self, model_name: str, pairs: list[tuple], sources: list[str], init: str | Path = "random",
                                    classes: list[str] | None = None, roi: int = 96, feature_size: int = 48, steps: int = 1000,
                                    device: str = "auto", extra: list[str] | None = None, overwrite: bool = False) -> TrainingRun:
        """Fine-tunes into the models folder (``model_name``) from scene (volume, segmentation) pairs, which
        are exported first, and ``sources``: labelled-case folders, ``.mrb`` files or folders of .seg.nrrd."""
        if str(init) != "random" and (str(init) in ("", ".") or not Path(init).exists()):
            raise ValueError(f"initial weights not found: {init!r} (untick 'Initialise from' for random weights)")
        out = self.default_model_folder(model_name)
        cases = Path(tempfile.mkdtemp(prefix="SwinSSL-cases-", dir=self._temp_folder()))  # not in ``out``: --overwrite sets that aside
        scenes = [str(self.export_scene_cases(pairs, cases)[0].parent)] if pairs else []
        folders = [s for s in sources if Path(s).is_dir() and not any(Path(s).glob("*.seg.nrrd"))]
        scenes += [s for s in sources if s not in folders]
        return self.start_finetuning(out, folders, scenes, str(init), classes, roi, feature_size, steps, device, extra, overwrite)

    def start_tuning(self, model: str | Path, cases: Path, steps: int = 200, device: str = "auto", resume: bool = False,
                     extra: list[str] | None = None) -> TrainingRun:
        """Correct and retrain: fine-tunes ``model`` on the training set ``cases`` (:func:`tuning_plan`), into the
        models folder, replacing an earlier ``<model>-tuned``; ``resume`` continues a stopped one."""
        plan = tuning_plan(model)
        out = self.default_model_folder(plan.name)
        if resume:
            return self.start_finetuning(out, steps=steps, resume=True, extra=extra)
        if not count_cases(cases):
            raise ValueError(f"the training set {cases} is empty: correct a segmentation and click 'Add to training set' first")
        return self.start_finetuning(out, scenes=[str(cases)], init=plan.init, classes=plan.classes, roi=plan.roi,
                                     feature_size=plan.feature_size, steps=steps, device=device, extra=extra,
                                     overwrite=self.holds_run(out, "finetune"))

    def _temp_folder(self) -> Path | None:
        if self.temp_root is not None:
            Path(self.temp_root).mkdir(parents=True, exist_ok=True)
        return self.temp_root

    def _start(self, kind: str, arguments: list[str], out: Path) -> TrainingRun:
        folder = Path(tempfile.mkdtemp(prefix=f"SwinSSL-{kind}-", dir=self._temp_folder()))
        engine = engine_process().start(arguments, folder / "events.jsonl", self.python, stoppable=True)
        return TrainingRun(kind, engine, out)

    # --- while running ------------------------------------------------------------------------
    def poll(self, run: TrainingRun) -> list[dict]:
        """Reads new events: progress into the loss table, previews into volume nodes, messages."""
        events = run.engine.poll()
        for event in events:
            kind = event["event"]
            if kind == "cache":
                run.preparing = f"preparing volumes: {event['done']} of {event['total']}"
                run.eta_s = event.get("eta_s")
            elif kind == "progress" and event.get("stage") == "validation":
                run.validation = (f"validating case {event['case']} of {event['cases']}: "
                                  f"window {event['window']} of {event['windows']}")
            elif kind == "progress":
                run.validation = run.preparing = None
                run.step, run.total, run.eta_s = event["step"], event["total"], event.get("eta_s")
                run.show_plot = run.show_plot or run.chart_node_id is None or self.scene.GetNodeByID(run.chart_node_id) is None
                self._append_losses(run, event)
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
        return events

    def stop(self, run: TrainingRun) -> None:
        """Graceful, on every platform: the run finishes its step, writes a checkpoint and can be resumed."""
        run.engine.stop()

    def cancel(self, run: TrainingRun) -> None:
        run.engine.cancel()

    def _loss_table(self, run: TrainingRun, columns: list[str]):
        """The run folder's loss table (created with its chart on first use, found again on Resume)."""
        folder = str(run.out.resolve())
        table_node = next((n for n in nodes_by_class(self.scene, "vtkMRMLTableNode") if n.GetAttribute(RUN_ATTRIBUTE) == folder), None)
        chart = next((n for n in nodes_by_class(self.scene, "vtkMRMLPlotChartNode") if n.GetAttribute(RUN_ATTRIBUTE) == folder), None)
        if table_node is None:
            table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"SwinSSL {run.kind} losses")
            table_node.SetAttribute(RUN_ATTRIBUTE, folder)
            for name in ["step"] + columns:
                array = vtk.vtkFloatArray()
                array.SetName(name)
                table_node.GetTable().AddColumn(array)
            chart = None  # a chart left over would plot the table that is gone
        if chart is None:  # new, or deleted by the user
            chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"SwinSSL {run.kind} loss curves")
            chart.SetAttribute(RUN_ATTRIBUTE, folder)
            chart.SetXAxisTitle("step")
            chart.SetYAxisTitle("loss")
            for name in columns:
                series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
                series.SetAndObserveTableNodeID(table_node.GetID())
                series.SetXColumnName("step")
                series.SetYColumnName(name)
                series.SetPlotType(series.PlotTypeScatter)  # line plots ignore the x column (vtkMRMLPlotSeriesNode::IsXColumnRequired)
                series.SetMarkerStyle(series.MarkerStyleNone)
                chart.AddAndObservePlotSeriesNodeID(series.GetID())
        run.table_node_id, run.chart_node_id = table_node.GetID(), chart.GetID()
        return table_node

    def _append_losses(self, run: TrainingRun, event: dict) -> None:
        losses = event.get("losses") or {}
        values = dict(losses)
        if "val_mean_dice" in event:
            values["val_mean_dice"] = event["val_mean_dice"]
        columns = list(losses) if run.kind == "pretrain" else ["total", "val_mean_dice"]
        table = self._loss_table(run, columns).GetTable()
        while table.GetNumberOfRows() and table.GetValue(table.GetNumberOfRows() - 1, 0).ToDouble() >= event["step"]:
            table.RemoveRow(table.GetNumberOfRows() - 1)  # steps logged after the checkpoint a resumed run starts from
        row = table.InsertNextBlankRow()
        table.SetValue(row, 0, vtk.vtkVariant(float(event["step"])))
        for index, name in enumerate(columns, start=1):
            value = values.get(name)
            table.SetValue(row, index, vtk.vtkVariant(float(value) if value is not None else float("nan")))
        table.Modified()

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
    def export_scene_cases(self, pairs: list[tuple], folder: Path) -> list[Path]:
        """Writes each (volume node, segmentation node) as ``<name>.nrrd`` + ``<name>.seg.nrrd`` (segment names,
        colours and geometry kept, labelmap on the volume's grid), next to cases already in ``folder``.
        Returns the .seg.nrrd paths."""
        written, used = [], set()
        for volume, segmentation in pairs:
            same_parent_transform([volume, segmentation])
            stem = safe_name(volume.GetName())
            while stem in used or (folder / f"{stem}.seg.nrrd").exists():  # never replaces a case saved before
                stem += "_1"
            used.add(stem)
            write_volume(volume, folder / f"{stem}.nrrd")
            written.append(write_segmentation(segmentation, folder / f"{stem}.seg.nrrd", reference_volume=volume))
        return written

"""Pretraining and fine-tuning runs for SwinSSLPretrain, without Qt.

Losses stream into a table node plotted by a chart node; each ``preview`` event loads the
original / masked / reconstructed crops into three volume nodes that are reused (replaced), not
piled up. Scene cases are exported as NRRD volume + .seg.nrrd pairs for ``swinssl finetune --scenes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import vtk

from SwinSSLSegmentLib.engine import ensure_engine_on_path
from SwinSSLSegmentLib.mrml_io import read_volume, write_segmentation, write_volume

ensure_engine_on_path()

from swinssl.models import models_dir  # noqa: E402
from swinssl.runner import EngineProcess  # noqa: E402

PREVIEW_KINDS = ("original", "masked", "reconstruction")
PREVIEW_ATTRIBUTE = "SwinSSL.Preview"


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


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "case"


class TrainingLogic:
    def __init__(self, scene, python: str | None = None) -> None:
        self.scene = scene
        self.python = python

    # --- starting -----------------------------------------------------------------------------
    def start_pretraining(self, data_folders: list[str], out: Path, preset: str = "ct", roi: int = 96, feature_size: int = 48,
                          steps: int = 1000, batch_size: int = 2, loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                          preview_every: int = 100, device: str = "auto", resume: bool = False, extra: list[str] | None = None) -> TrainingRun:
        if resume:
            arguments = ["pretrain", "--out", str(out), "--resume", "--steps", str(steps)]
        else:
            if not data_folders:
                raise ValueError("choose at least one data folder")
            arguments = ["pretrain", "--data", *data_folders, "--out", str(out), "--preset", preset, "--roi", str(roi),
                         "--feature-size", str(feature_size), "--steps", str(steps), "--batch-size", str(batch_size),
                         "--loss-weights", *map(str, loss_weights), "--preview-every", str(preview_every), "--device", device]
        return self._start("pretrain", arguments + list(extra or []), out)

    def start_finetuning(self, out: Path, data_folders: list[str] = (), scenes: list[str] = (), init: str = "random",
                         classes: list[str] | None = None, roi: int = 96, feature_size: int = 48, steps: int = 1000,
                         device: str = "auto", extra: list[str] | None = None) -> TrainingRun:
        """Fine-tunes into ``out``; by default under the models folder, so SwinSSLSegment lists the result."""
        if not data_folders and not scenes:
            raise ValueError("choose labelled cases: scene pairs, folders or .mrb files")
        arguments = ["finetune", "--out", str(out), "--init", init, "--roi", str(roi), "--feature-size", str(feature_size),
                     "--steps", str(steps), "--device", device]
        arguments += (["--data", *data_folders] if data_folders else []) + (["--scenes", *scenes] if scenes else [])
        arguments += ["--classes", *classes] if classes else []
        return self._start("finetune", arguments + list(extra or []), out)

    def default_model_folder(self, name: str) -> Path:
        return models_dir() / _safe_name(name)

    def _start(self, kind: str, arguments: list[str], out: Path) -> TrainingRun:
        out.mkdir(parents=True, exist_ok=True)
        engine = EngineProcess.start(arguments, out / f"slicer_{kind}_events.jsonl", self.python)
        return TrainingRun(kind, engine, out)

    # --- while running ------------------------------------------------------------------------
    def poll(self, run: TrainingRun) -> list[dict]:
        """Reads new events: progress into the loss table, previews into volume nodes, messages."""
        events = run.engine.poll()
        for event in events:
            kind = event["event"]
            if kind == "progress":
                run.step, run.total, run.eta_s = event["step"], event["total"], event.get("eta_s")
                self._append_losses(run, event)
                if event.get("val_dice"):
                    run.dice = event["val_dice"]
            elif kind == "preview":
                self.load_preview(event["paths"], event["step"])
                run.preview_step = event["step"]
            elif kind in ("warning", "stopped"):
                run.messages.append(f"{kind}: {event.get('reason')}" + (f" ({event['file']})" if event.get("file") else ""))
            elif kind == "error":
                run.error = event["message"]
        return events

    def stop(self, run: TrainingRun) -> None:
        """Graceful: the run finishes its step, writes a checkpoint and can be resumed."""
        run.engine.stop()

    def cancel(self, run: TrainingRun) -> None:
        run.engine.cancel()

    def _loss_table(self, run: TrainingRun, columns: list[str]):
        table_node = self.scene.GetNodeByID(run.table_node_id) if run.table_node_id else None
        if table_node is not None:
            return table_node
        table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"SwinSSL {run.kind} losses")
        for name in ["step"] + columns:
            array = vtk.vtkFloatArray()
            array.SetName(name)
            table_node.GetTable().AddColumn(array)
        chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"SwinSSL {run.kind} loss curves")
        chart.SetXAxisTitle("step")
        chart.SetYAxisTitle("loss")
        for name in columns:
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
            series.SetAndObserveTableNodeID(table_node.GetID())
            series.SetXColumnName("step")
            series.SetYColumnName(name)
            series.SetPlotType(series.PlotTypeLine)
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
        row = table.InsertNextBlankRow()
        table.SetValue(row, 0, vtk.vtkVariant(float(event["step"])))
        for index, name in enumerate(columns, start=1):
            value = values.get(name)
            table.SetValue(row, index, vtk.vtkVariant(float(value) if value is not None else float("nan")))
        table.Modified()

    def load_preview(self, paths: dict, step: int) -> list:
        """Loads the three preview crops into the same three volume nodes every time; returns them."""
        nodes = []
        for kind in PREVIEW_KINDS:
            existing = [n for n in self.scene.GetNodesByClass("vtkMRMLScalarVolumeNode") if n.GetAttribute(PREVIEW_ATTRIBUTE) == kind]
            node = read_volume(self.scene, Path(paths[kind]), f"SwinSSL preview {kind}", existing[0] if existing else None)
            node.SetAttribute(PREVIEW_ATTRIBUTE, kind)
            node.SetAttribute("SwinSSL.PreviewStep", str(step))
            nodes.append(node)
        return nodes

    # --- scene export -------------------------------------------------------------------------
    def export_scene_cases(self, pairs: list[tuple], folder: Path) -> list[Path]:
        """Writes each (volume node, segmentation node) as ``<name>.nrrd`` + ``<name>.seg.nrrd`` (segment names,
        colours and geometry kept, labelmap on the volume's grid). Returns the .seg.nrrd paths."""
        written, used = [], set()
        for volume, segmentation in pairs:
            stem = _safe_name(volume.GetName())
            while stem in used:
                stem += "_1"
            used.add(stem)
            write_volume(volume, folder / f"{stem}.nrrd")
            written.append(write_segmentation(segmentation, folder / f"{stem}.seg.nrrd", reference_volume=volume))
        return written

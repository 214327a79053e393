"""SwinSSLSegment's work, without Qt: inputs to temporary NRRD files, ``swinssl segment`` as a
subprocess, event polling, cancel, and the result as a named, coloured segmentation node."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from SwinSSLSegmentLib.engine import ensure_engine_on_path
from SwinSSLSegmentLib.mrml_io import place_under_study, read_segmentation, write_volume

ensure_engine_on_path()

from swinssl.models import list_packages, models_dir  # noqa: E402
from swinssl.package import ModelPackage, load_package  # noqa: E402
from swinssl.runner import EngineProcess  # noqa: E402


@dataclass
class SegmentRun:
    """One running segmentation: the subprocess, its temporary folder and what it was asked."""

    engine: EngineProcess
    folder: Path
    output: Path
    input_node_ids: list[str]
    output_name: str
    windows_done: int = 0
    windows_total: int = 0
    messages: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def progress(self) -> float:
        return self.windows_done / self.windows_total if self.windows_total else 0.0


class SegmentationLogic:
    """Drives ``swinssl segment`` for volumes of ``scene``. Polling is a method the widget calls from a timer."""

    def __init__(self, scene, python: str | None = None, models_folder: Path | None = None) -> None:
        self.scene = scene
        self.python = python
        self.models_folder = models_folder or models_dir()

    def available_models(self) -> list[ModelPackage]:
        return list_packages(self.models_folder)

    def start(self, input_nodes: list, model: str | Path, device: str = "auto", overlap: float = 0.5, fast: bool = False,
              output_name: str | None = None, register: bool = True) -> SegmentRun:
        """Writes the inputs to temporary NRRD files and starts the engine; returns at once.

        With several inputs (e.g. CT and PET volumes) and ``register``, the engine registers each to
        the first before stacking them; the segmentation is on the first input's grid.
        """
        package = load_package(model)
        if len(input_nodes) != len(package.channels) or any(node is None for node in input_nodes):
            raise ValueError(f"model {package.name!r} needs {len(package.channels)} input volume(s): "
                             + ", ".join(c.modality for c in package.channels))
        folder = Path(tempfile.mkdtemp(prefix="SwinSSLSegment-"))
        try:
            inputs = [write_volume(node, folder / f"input_{index}.nrrd") for index, node in enumerate(input_nodes)]
            output = folder / "result.seg.nrrd"
            arguments = ["segment", "--model", str(package.path), "--input", *map(str, inputs), "--output", str(output),
                         "--device", device, "--overlap", str(overlap)] + (["--fast"] if fast else [])
            if register and len(inputs) > 1:
                arguments.append("--register")
            engine = EngineProcess.start(arguments, folder / "events.jsonl", self.python)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        name = output_name or f"{input_nodes[0].GetName()} {package.name}"
        return SegmentRun(engine, folder, output, [node.GetID() for node in input_nodes], name)

    def poll(self, run: SegmentRun) -> list[dict]:
        """Reads new events into ``run`` (progress, warnings, errors) and returns them."""
        events = run.engine.poll()
        for event in events:
            if event["event"] == "progress" and event.get("stage") == "register":
                metric = event["registration"]["metric"]
                run.messages.append(f"Input {event['channel'] + 1} registered to input 1 (mutual information {metric:.3f})")
            elif event["event"] == "progress":
                run.windows_done, run.windows_total = event["step"], event["total"]
            elif event["event"] == "warning":
                run.messages.append(f"Warning: {event['reason']}")
            elif event["event"] == "error":
                run.error = event["message"]
        return events

    def cancel(self, run: SegmentRun) -> None:
        """Stops the whole process tree and removes the temporary files; the scene is not touched."""
        run.engine.cancel()
        shutil.rmtree(run.folder, ignore_errors=True)

    def finish(self, run: SegmentRun, output_node=None):
        """After the process ended: loads the result into ``output_node`` (new when None), sets its reference
        geometry to the input, places it under the input's study, shows it in 2-D and 3-D, removes temp files."""
        try:
            run.engine.wait()
            self.poll(run)
            if run.engine.exit_code != 0 or not run.output.exists():
                raise RuntimeError(run.error or f"swinssl segment failed (exit {run.engine.exit_code}):\n{run.engine.log_tail()}")
            reference = self.scene.GetNodeByID(run.input_node_ids[0])
            node = read_segmentation(self.scene, run.output, run.output_name, output_node)
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
            node.CreateDefaultDisplayNodes()
            node.CreateClosedSurfaceRepresentation()
            place_under_study(node, reference)
            return node
        finally:
            shutil.rmtree(run.folder, ignore_errors=True)

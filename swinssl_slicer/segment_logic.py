"""Segmenting volumes of an MRML scene: inputs to temporary NRRD files, ``swinssl segment`` as a
subprocess, event polling, cancel, and the result as a named, coloured segmentation node.

A run whose scene is closed is cancelled at once (the scene's StartCloseEvent), so nothing is ever
loaded into a scene that no longer holds its input. Listing and choosing models needs only the
``model.json`` files; the engine's requirements (torch, psutil, ...) are needed from :meth:`start` on.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from swinssl_slicer.confidence_display import CONFIDENCE_ATTRIBUTE, style_confidence_map
from swinssl_slicer.engine import engine_process, ensure_engine_on_path
from swinssl_slicer.mrml_io import place_under_study, read_segmentation, read_volume, same_parent_transform, write_volume
from swinssl_slicer.show_3d import show_in_3d

ensure_engine_on_path()

from swinssl.models import UNREADABLE_PACKAGE, list_packages, models_dir, unshadowed_bundled  # noqa: E402  (reads model.json files only: no torch import)
from swinssl.inference.plausibility import doubtful, summary_lines  # noqa: E402  (plain Python: no torch import)
from swinssl.labels.anatomy import shown_name  # noqa: E402
from swinssl.package import ModelPackage, load_package  # noqa: E402

if TYPE_CHECKING:
    from swinssl.runner import EngineProcess


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
    confidence_output: Path | None = None  # asked for a confidence map: where the engine writes it
    confidence: dict = field(default_factory=dict)  # segment name -> {"mean", "below"} from the done event
    confidence_node_id: str | None = None  # the loaded map, after finish()
    input_names: dict[str, str] = field(default_factory=dict)  # temporary input file -> its volume's name, for messages
    warnings: list[str] = field(default_factory=list)  # the engine's doubts about the inputs (e.g. "looks like a chest CT")
    mismatch: bool = False  # refused: an input is certainly not the model's kind; start(..., allow_mismatch=True) overrides
    plausibility: list[str] = field(default_factory=list)  # after the run: volumes, confidence and flags, one line each
    doubtful: bool = False  # after the run: an input warning, an unexpected empty segment or a confidence far below the model's

    def named(self, text: str) -> str:
        """``text`` with the temporary input files replaced by their volumes' names."""
        for path, name in self.input_names.items():
            text = text.replace(path, name)
        return text

    def done_message(self, segments: int) -> str:
        """The line a face shows when the run has ended well: "Done" only without doubts, else what to read first."""
        if self.doubtful:
            return f"Done with doubts: {segments} segments; read the warnings and the result check before using them"
        return f"Done: {segments} segments"

    @property
    def progress(self) -> float:
        return self.windows_done / self.windows_total if self.windows_total else 0.0


class SegmentationLogic:
    """Drives ``swinssl segment`` for volumes of ``scene``. Polling is a method the face calls from a timer.

    ``python`` is the interpreter (or launcher, e.g. PythonSlicer) that runs the engine; ``temp_root`` the
    folder for per-run temporary files (Slicer's temporary path inside Slicer).
    """

    def __init__(self, scene, python: str | None = None, models_folder: Path | None = None, temp_root: Path | None = None,
                 bundled: bool = False) -> None:
        import slicer

        self.scene = scene
        self.bundled = bundled  # also offer the packages the engine carries (the demo organ model), after the installed ones
        self.python = python
        self.models_folder = models_folder or models_dir()
        self.temp_root = temp_root
        self.active: list[SegmentRun] = []
        self._close_observer = scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, self._on_scene_close)

    def available_models(self) -> list[ModelPackage]:
        """Installed packages, then (with ``bundled``) the carried ones no installed package of the same name hides; from
        their ``model.json`` files alone."""
        installed = list_packages(self.models_folder)
        return installed + [package for package, _ in unshadowed_bundled(installed)] if self.bundled else installed

    def choose_model(self, saved: str | Path | None) -> str:
        """The model a face should show selected: ``saved`` when it is still installed (or is a package
        folder that can be read: :meth:`model_problem`), else the first installed one, else ""."""
        paths = [str(package.path) for package in self.available_models()]
        if saved:
            listed = next((path for path in paths if Path(path).resolve() == Path(saved).resolve()), None)
            if listed or self.model_problem(saved) is None:
                return listed or str(saved)
        return paths[0] if paths else ""

    @staticmethod
    def model_problem(model: str | Path) -> str | None:
        """Why the package folder ``model`` cannot be used (no package there, or its model.json cannot be read or is
        malformed), naming the file; None when it can."""
        try:
            load_package(model)
        except UNREADABLE_PACKAGE as error:
            return str(error) if isinstance(error, ValueError) else f"{Path(model) / 'model.json'}: {type(error).__name__}: {error}"
        return None

    def channel_names(self, model: str | Path) -> list[str]:
        """The modality of each input the model needs, e.g. ["CT"] or ["CT", "PET"]; [] without a model."""
        if not model:
            return []
        return [channel.modality for channel in load_package(model).channels]

    def model_details(self, model: str | Path) -> str:
        """What the model was trained on and what it is known to miss, for beside the model choice; "" without a model."""
        return load_package(model).describe_training() if model else ""

    def start(self, input_nodes: list, model: str | Path, device: str = "auto", overlap: float = 0.5, fast: bool = False,
              output_name: str | None = None, register: bool = True, confidence: bool = False, allow_mismatch: bool = False,
              backend: str = "auto") -> SegmentRun:
        """Writes the inputs to temporary NRRD files (uncompressed) and starts the engine; returns at once.

        With several inputs (e.g. CT and PET volumes) and ``register``, the engine registers each to
        the first before stacking them; the segmentation is on the first input's grid. With ``confidence``
        the engine also writes the confidence map, which :meth:`finish` loads as a volume. An input that is certainly
        not the model's kind (an MR into a CT model) is refused by the engine (``run.mismatch``) unless ``allow_mismatch``.
        ``backend``: auto (the engine's default: OpenVINO on the CPU), torch or openvino.
        """
        if not model:
            raise ValueError(f"choose a model: none is installed in {self.models_folder} (Import... adds one)")
        package = load_package(model)
        if len(input_nodes) != len(package.channels) or any(node is None for node in input_nodes):
            raise ValueError(f"model {package.name!r} needs {len(package.channels)} input volume(s): "
                             + ", ".join(c.modality for c in package.channels))
        same_parent_transform(input_nodes)
        from swinssl_slicer.volume_reading import check_source_files  # SimpleITK: not needed to list models

        check_source_files(input_nodes)  # what Slicer read from a file the engine would refuse (truncated, NaN)
        if self.temp_root is not None:
            Path(self.temp_root).mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="SwinSSLSegment-", dir=self.temp_root))
        try:
            inputs = [write_volume(node, folder / f"input_{index}.nrrd") for index, node in enumerate(input_nodes)]
            output = folder / "result.seg.nrrd"
            arguments = ["segment", "--model", str(package.path), "--input", *map(str, inputs), "--output", str(output),
                         "--device", device, "--overlap", str(overlap)] + (["--fast"] if fast else [])
            if register and len(inputs) > 1:
                arguments.append("--register")
            confidence_output = folder / "confidence.nrrd" if confidence else None
            arguments += ["--confidence", str(confidence_output)] if confidence_output else []
            arguments += ["--allow-mismatch"] if allow_mismatch else []
            arguments += ["--backend", backend] if backend != "auto" else []  # auto: the engine's default ($SWINSSL_BACKEND, else auto)
            engine = engine_process().start(arguments, folder / "events.jsonl", self.python)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        name = output_name or f"{input_nodes[0].GetName()} {package.name}"
        run = SegmentRun(engine, folder, output, [node.GetID() for node in input_nodes], name, confidence_output=confidence_output,
                         input_names={str(path): node.GetName() for path, node in zip(inputs, input_nodes)})
        self.active.append(run)
        return run

    def poll(self, run: SegmentRun) -> list[dict]:
        """Reads new events into ``run`` (progress, warnings, errors) and returns them."""
        events = run.engine.poll()
        for event in events:
            if event["event"] == "progress" and event.get("stage") == "register":
                metric = event["registration"]["metric"]
                run.messages.append(f"Input {event['channel'] + 1} registered to input 1 (mutual information {metric:.3f})")
            elif event["event"] == "progress" and event.get("stage") == "prepare":
                run.messages += [event["message"][:1].upper() + event["message"][1:]] if "message" in event else []  # OpenVINO's first conversion of a model
            elif event["event"] == "progress":
                run.windows_done, run.windows_total = event["step"], event["total"]
            elif event["event"] == "warning":
                warning = run.named(f"{event['file']}: {event['reason']}" if event.get("file") else event["reason"])
                run.warnings.append(warning)
                run.messages.append(f"Warning: {warning}")
            elif event["event"] == "done":
                run.confidence = event.get("confidence") or {}
                run.plausibility = summary_lines(event["plausibility"], shown_name) if "plausibility" in event else []
                run.doubtful = bool(run.warnings) or ("plausibility" in event and doubtful(event["plausibility"]))
                run.messages += run.plausibility
            elif event["event"] == "error":
                run.error = run.named(event["message"])
                run.mismatch = event.get("kind") == "InputMismatchError"
        return events

    def cancel(self, run: SegmentRun) -> None:
        """Ends the whole process tree and removes the temporary files; the scene is not touched. Returns within a
        few seconds (the GUI thread calls it): a process that outlives its kill is left behind and named in ``run.error``."""
        if not run.engine.cancel():
            left = ", ".join(str(process.pid) for process in run.engine.alive_processes())
            run.error = f"Engine process {left} did not end: end it with the system's task manager"
        self._forget(run)

    def finish(self, run: SegmentRun, previous=None, show_3d: bool = True):
        """After the process ended: loads the result into a new segmentation node named after the input (unique in
        the scene), sets its reference geometry to the input, places it under the input's study, shows it in 2-D (and
        3-D with ``show_3d``: see :mod:`swinssl_slicer.show_3d`), removes temp files. ``previous``: the result the face
        showed so far; never read into (the storage node's read removes every segment first: the user's corrections
        would go), only hidden when it was made on the same input, so that the two are not drawn over each other."""
        try:
            run.engine.wait()
            self.poll(run)
            if run.engine.outcome != "done" or not run.output.exists():
                raise RuntimeError(run.error or f"swinssl segment failed ({run.engine.outcome}, exit {run.engine.exit_code}):\n{run.engine.log_tail()}")
            reference = self.scene.GetNodeByID(run.input_node_ids[0])
            if reference is None:
                raise RuntimeError("the input volume was removed from the scene while it was being segmented; the result was not loaded")
            run.output_name = self.scene.GenerateUniqueName(run.output_name)
            model = next((event.get("model") for event in run.engine.events if event["event"] == "start"), None)
            node = read_segmentation(self.scene, run.output, run.output_name, algorithm=model)  # Slicer's names; the model for DICOM SEG export
            node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())  # computed in the input's local frame
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
            node.CreateDefaultDisplayNodes()
            show_in_3d(node, show_3d)
            place_under_study(node, reference)
            if previous is not None and previous.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) == reference.GetID():
                previous.SetDisplayVisibility(False)
            if run.confidence_output is not None:
                run.confidence_node_id = self._load_confidence(run, reference).GetID()
            return node
        finally:
            self._forget(run)

    def _load_confidence(self, run: SegmentRun, reference):
        """The confidence map as a volume beside the segmentation, styled as every face shows it (Inferno over 0..1,
        drawn below the engine's threshold of 'unsure', with a colour legend: :mod:`swinssl_slicer.confidence_display`)."""
        volume = read_volume(self.scene, run.confidence_output, f"{run.output_name} confidence")
        volume.SetAttribute(CONFIDENCE_ATTRIBUTE, "1")
        volume.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
        done = next(event for event in run.engine.events if event["event"] == "done")
        style_confidence_map(volume, done["confidence_threshold"])
        place_under_study(volume, reference)
        return volume

    def _forget(self, run: SegmentRun) -> None:
        shutil.rmtree(run.folder, ignore_errors=True)
        if run in self.active:
            self.active.remove(run)

    def _on_scene_close(self, caller, event) -> None:
        for run in list(getattr(self, "active", [])):  # at interpreter exit the scene may outlive our attributes
            self.cancel(run)
            run.error = "cancelled: the scene was closed"

    def close(self) -> None:
        """Cancels every run and stops observing the scene (a face calls this when it goes away)."""
        for run in list(self.active):
            self.cancel(run)
        self.scene.RemoveObserver(self._close_observer)

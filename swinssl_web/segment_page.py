"""The Segment page's logic: open a case (upload or server-side data), segment it with an installed model
through :class:`swinssl_slicer.segment_logic.SegmentationLogic` (the Slicer module's logic), hand the result
to trame-slicer's segment editor, download it, and add corrected cases to the training set.

State keys start with ``seg_``. Volumes of the open case are the scene's scalar volumes that are not
training previews; opening another case removes them and their segmentations (a running segmentation
is cancelled first).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from trame_server import Server
from trame_slicer.core import SlicerApp

from swinssl_slicer.confidence_display import show_confidence
from swinssl_slicer.mrml_io import nodes_by_class, segment_algorithm, write_dicom_segmentation, write_segmentation
from swinssl_slicer.segment_logic import CONFIDENCE_ATTRIBUTE, SegmentationLogic, SegmentRun
from swinssl_slicer.training_logic import PREVIEW_ATTRIBUTE, RUN_ATTRIBUTE, TrainingLogic, count_cases, parents_first, tuning_verdict
from swinssl_slicer.volume_reading import add_volume_node, read_checked_volumes

from swinssl.labels.anatomy import shown_name
from swinssl.package import BACKENDS, ModelPackage, load_package

CASE_VIEW_GROUP = 0  # the Segment layout's views; previews live in group 1


def training_nodes(scene) -> list:
    """What training runs put in ``scene``: preview volumes, loss tables, charts and their series, and the
    display nodes of those volumes."""
    nodes = [node for node in nodes_by_class(scene, "vtkMRMLNode")
             if node.GetAttribute(PREVIEW_ATTRIBUTE) or node.GetAttribute(RUN_ATTRIBUTE) or node.IsA("vtkMRMLPlotSeriesNode")]
    displays = []
    for node in nodes:
        if node.IsA("vtkMRMLDisplayableNode"):
            displays += [node.GetNthDisplayNode(index) for index in range(node.GetNumberOfDisplayNodes())]
    return nodes + [display for display in displays if display is not None]


def describe_model(package: ModelPackage) -> str:
    names = [shown_name(label.name) for label in package.labels.labels]  # as its segments will be named
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    verdict = tuning_verdict(package)
    return f"{' + '.join(c.modality for c in package.channels)} · {len(names)} segments: {shown}" + (f" · {verdict}" if verdict else "")


def confidence_legend(confidence, stops: int = 11) -> dict:
    """The page's colour bar for the confidence map as drawn: its colour table over its 0..1 window as a CSS
    gradient, faded from the display threshold up (not drawn there), and that threshold."""
    display = confidence.GetDisplayNode()
    table, threshold = display.GetColorNode().GetLookupTable(), display.GetUpperThreshold()
    colours = []
    for value in sorted({index / (stops - 1) for index in range(stops)} | {threshold}):
        red, green, blue, _ = table.GetTableValue(round(value * (table.GetNumberOfTableValues() - 1)))
        rgb = f"{round(255 * red)}, {round(255 * green)}, {round(255 * blue)}"
        colours += [f"rgb({rgb}) {value:.0%}"] if value <= threshold else []  # both at the threshold: a hard edge
        colours += [f"rgba({rgb}, 0.25) {value:.0%}"] if value >= threshold else []
    return {"style": f"height: 10px; border-radius: 2px; background: linear-gradient(to right, {', '.join(colours)});", "threshold": f"{threshold:g}"}


class SegmentPage:
    """Holds the open case and the running segmentation of one app (one scene)."""

    def __init__(self, server: Server, slicer_app: SlicerApp, segmentation: SegmentationLogic, training: TrainingLogic,
                 cases_folder: Path, extra_models: list[Path] = ()) -> None:
        self.server, self.slicer_app = server, slicer_app
        self.segmentation, self.training = segmentation, training
        self.cases_folder = cases_folder
        self.extra_models = list(extra_models)
        self.run: SegmentRun | None = None
        self.confidence_ids: tuple[str, str] | None = None  # the latest confidence map and the volume it is over
        self.dicom_sources: dict[str, tuple[list, list[str]]] = {}  # volume node ID -> (its series' headers, doubts about them)
        state = server.state
        state.seg_models, state.seg_model, state.seg_model_info, state.seg_channels = [], "", "", []
        state.seg_volumes, state.seg_inputs, state.seg_case_name, state.seg_download_stem = [], [], "", ""
        state.seg_case_details = []
        state.seg_dicom = False  # the case holds a DICOM series: a DICOM SEG can be downloaded
        state.seg_uploading = False
        state.seg_running, state.seg_progress, state.seg_message, state.seg_cases = False, 0, "", count_cases(self.cases_folder)
        state.seg_confidence = False
        state.seg_backend = "auto"  # the inference engine: auto (the model's choice, else OpenVINO on the CPU), torch, openvino
        state.seg_backends = list(BACKENDS)
        state.seg_confidence_legend = None  # the colour bar while a confidence map is on the views: confidence_legend()
        state.seg_model_trained, state.seg_warnings, state.seg_plausibility = "", [], []  # what the model knows; doubts; the result's check
        state.seg_mismatch, state.seg_allow_mismatch = False, False  # the engine refused the input; the user's explicit override
        self.refresh_models()

    @property
    def scene(self):
        return self.slicer_app.scene

    # --- models ----------------------------------------------------------------------------------
    def packages(self) -> list:
        listed = self.segmentation.available_models()
        paths = {package.path.resolve() for package in listed}
        return parents_first(listed + [load_package(path) for path in self.extra_models if Path(path).resolve() not in paths])

    def refresh_models(self) -> None:
        """Lists the installed models (and keeps the chosen one while it is installed)."""
        packages = self.packages()
        self.server.state.seg_models = [{"title": package.name, "value": str(package.path)} for package in packages]
        current = self.server.state.seg_model
        if current not in [str(package.path) for package in packages]:
            self.server.state.seg_model = str(packages[0].path) if packages else ""
        self.on_model_changed(self.server.state.seg_model)

    def listed_model(self, seg_model: str) -> str:
        """``seg_model`` when it is one of the listed models: the page's state is the browser's to change."""
        if seg_model not in [choice["value"] for choice in self.server.state.seg_models]:
            raise ValueError("choose one of the listed models")
        return seg_model

    def on_model_changed(self, seg_model: str) -> None:
        state = self.server.state
        if not seg_model:
            state.seg_model_info, state.seg_channels = "No model installed: swinssl models import ..., or fine-tune one on the Train page.", []
            return
        package = load_package(self.listed_model(seg_model))
        state.seg_model_info = describe_model(package)
        state.seg_model_trained = package.describe_training()
        state.seg_channels = [channel.modality for channel in package.channels]
        self.choose_inputs()

    # --- the open case ---------------------------------------------------------------------------
    def case_volumes(self) -> list:
        return [node for node in nodes_by_class(self.scene, "vtkMRMLScalarVolumeNode") if not node.GetAttribute(PREVIEW_ATTRIBUTE)]

    def choose_inputs(self) -> None:
        """Lists the case's volumes (not confidence maps) and keeps (or picks, in load order) one per model channel."""
        state = self.server.state
        volumes = [node for node in self.case_volumes() if not node.GetAttribute(CONFIDENCE_ATTRIBUTE)]
        state.seg_volumes = [{"title": node.GetName(), "value": node.GetID()} for node in volumes]
        ids = [node.GetID() for node in volumes]
        chosen = [node_id for node_id in (state.seg_inputs or []) if node_id in ids]
        for node_id in ids:
            if len(chosen) >= len(state.seg_channels):
                break
            if node_id not in chosen:
                chosen.append(node_id)
        state.seg_inputs = chosen[: len(state.seg_channels)]

    def close_case(self) -> None:
        """Cancels a running segmentation and removes the case's volumes and segmentations (and the editor's hold on them)."""
        if self.run is not None:
            self.cancel()
        self.slicer_app.segmentation_editor.clear()  # it keeps the active segmentation until told
        for node in self.case_volumes() + nodes_by_class(self.scene, "vtkMRMLSegmentationNode"):
            self.scene.RemoveNode(node)
        state = self.server.state
        state.seg_case_name, state.seg_download_stem, state.seg_volumes, state.seg_inputs = "", "", [], []
        state.seg_case_details = []  # per DICOM series: its name (description), modality and study date from the header
        self.dicom_sources.clear()
        state.seg_dicom = False
        state.seg_warnings, state.seg_plausibility, state.seg_mismatch, state.seg_allow_mismatch = [], [], False, False  # the closed case's
        state.seg_confidence_legend = None  # its map went with it

    def open_case(self, location: Path, name: str) -> list:
        """Reads the volumes in ``location`` (a file, or the files of one folder: volume files and DICOM series) as
        the engine does, then replaces the open case with them. A volume the engine refuses raises ValueError
        (naming the file and the problem) before anything changes: the open case, its edits and lines stay.
        Returns the volume nodes."""
        checked = read_checked_volumes(location, name)
        self.close_case()
        volumes = [add_volume_node(self.scene, volume) for volume in checked]
        series = [(node, volume.source) for node, volume in zip(volumes, checked) if volume.source is not None and volume.source.is_dicom]
        if series:  # headers read now: uploaded files are removed once the case is open
            from swinssl.labels.dicom_seg import read_source_headers  # highdicom: seconds to import, for DICOM cases only
        for node, source in series:
            doubts = []
            self.dicom_sources[node.GetID()] = read_source_headers(source.dicom_files(), doubts.append), doubts
        self.server.state.seg_dicom = bool(self.dicom_sources)
        self.server.state.seg_case_name, self.server.state.seg_download_stem = name, volumes[0].GetName()
        self.server.state.seg_case_details = [f"{node.GetName()} ({volume.details})" for node, volume in zip(volumes, checked) if volume.details]
        self.show_case(volumes[0])
        self.choose_inputs()
        self.server.state.seg_message = f"Opened {name}: {len(volumes)} volume(s). Pick a model and click Segment."
        return volumes

    def show_case(self, volume) -> None:
        """Shows ``volume`` in the case's views and gives the editor an empty segmentation on it (to paint from scratch)."""
        editor = self.slicer_app.segmentation_editor
        editor.set_active_segmentation(editor.create_empty_segmentation_node(), volume)
        display = self.slicer_app.display_manager
        display.show_volume_in_slice_background(volume, CASE_VIEW_GROUP)
        display.show_volume_in_slice_foreground(None, CASE_VIEW_GROUP)
        display.set_node_visible_in_group(volume, CASE_VIEW_GROUP)
        display.reset_views(CASE_VIEW_GROUP)

    # --- segmenting --------------------------------------------------------------------------------
    def segment(self) -> None:
        state = self.server.state
        if self.run is not None:
            raise ValueError("a segmentation is running: wait for it or cancel it")
        if not self.case_volumes():
            raise ValueError("open a volume first (upload, or a server folder)")
        nodes = [self.scene.GetNodeByID(node_id) for node_id in state.seg_inputs]
        if state.seg_backend not in BACKENDS:
            raise ValueError(f"unknown inference engine {state.seg_backend!r}")
        self.run = self.segmentation.start(nodes, self.listed_model(state.seg_model), device="auto", confidence=bool(state.seg_confidence),
                                           allow_mismatch=bool(state.seg_mismatch and state.seg_allow_mismatch), backend=state.seg_backend)
        state.seg_warnings, state.seg_plausibility, state.seg_mismatch, state.seg_allow_mismatch = [], [], False, False
        state.seg_running, state.seg_progress = True, 0
        state.seg_message = f"Segmenting {state.seg_case_name}: loading the model and the volume ..."  # until the first window

    def cancel(self) -> None:
        if self.run is None:
            return  # it ended (and its result was loaded) before the click arrived
        run, self.run = self.run, None
        self.segmentation.cancel(run)  # returns within seconds; a process that outlived its kill is named in run.error
        state = self.server.state
        state.seg_running, state.seg_progress = False, 0
        state.seg_message = "Cancelled; the case is as it was." + (f" {run.error}." if run.error else "")

    def poll(self) -> None:
        """Reads the run's events (progress per window batch); loads the result when the engine ended."""
        if self.run is None:
            return
        run, state = self.run, self.server.state
        self.segmentation.poll(run)
        state.seg_warnings = list(run.warnings)
        state.seg_progress = round(100 * run.progress)
        if run.windows_total:
            state.seg_message = f"Segmenting {state.seg_case_name}: window {run.windows_done} of {run.windows_total}"
        if run.engine.running:
            return
        self.run = None
        state.seg_running = False
        try:
            node = self.segmentation.finish(run)
        except RuntimeError as error:
            state.seg_mismatch = run.mismatch  # offers "Segment anyway"
            state.seg_message = f"Not segmented: {error}" if run.mismatch else f"Segmentation failed: {error}"
            raise
        self.edit(node)
        state.seg_message = f"{run.done_message(node.GetSegmentation().GetNumberOfSegments())}. Correct them with the segment editor."
        state.seg_plausibility = run.plausibility
        if run.confidence_node_id:  # over the input in the case's views (while the box is ticked); each segment's figures are in the check
            self.confidence_ids = run.confidence_node_id, run.input_node_ids[0]
            self.show_confidence(bool(state.seg_confidence))

    def show_confidence(self, shown: bool) -> None:
        """The "Confidence map" box: the latest map over its volume in the case's views, or none; each view is
        redrawn at once (a slice view redraws itself only when told)."""
        showing = show_confidence(self.scene, *(self.confidence_ids or (None, None)), shown)
        self.server.state.seg_confidence_legend = confidence_legend(self.scene.GetNodeByID(self.confidence_ids[0])) if showing else None
        for view in self.slicer_app.view_manager.get_slice_views(CASE_VIEW_GROUP):
            view.schedule_render()

    def edit(self, node) -> None:
        """Makes ``node`` the segment editor's segmentation (an empty one the editor made is removed)."""
        editor = self.slicer_app.segmentation_editor
        previous = editor.active_segmentation_node
        volume = self.scene.GetNodeByID(self.run_reference(node))
        editor.set_active_segmentation(node, volume)
        if previous is not None and previous is not node and previous.GetSegmentation().GetNumberOfSegments() == 0:
            self.scene.RemoveNode(previous)
        editor.set_surface_representation_enabled(True)  # the organs in the 3-D view (no volume rendering: slow on CPUs)
        editor.trigger_all_signals()  # the display options in the page read the surface setting
        self.slicer_app.display_manager.reset_views(CASE_VIEW_GROUP)

    def run_reference(self, node) -> str:
        role = node.GetReferenceImageGeometryReferenceRole()
        return node.GetNodeReferenceID(role) or self.server.state.seg_inputs[0]

    # --- the result --------------------------------------------------------------------------------
    def result(self) -> tuple:
        """(volume, segmentation) being edited; ValueError when there is none."""
        node = self.slicer_app.segmentation_editor.active_segmentation_node
        if node is None or node.GetSegmentation().GetNumberOfSegments() == 0:
            raise ValueError("nothing to save yet: segment the volume (or paint a segment) first")
        return self.scene.GetNodeByID(self.run_reference(node)), node

    def segmentation_bytes(self) -> bytes:
        """The edited segmentation as .seg.nrrd (names, colours, terminology) on the input volume's grid."""
        volume, node = self.result()
        with tempfile.TemporaryDirectory(prefix="swinssl-web-") as folder:
            return write_segmentation(node, Path(folder) / "segmentation.seg.nrrd", reference_volume=volume).read_bytes()

    def dicom_seg_bytes(self) -> bytes:
        """The edited segmentation as a DICOM Segmentation of the series the segmented volume was read from, by the
        model whose result it started from (:func:`swinssl_slicer.mrml_io.write_dicom_segmentation`)."""
        volume, node = self.result()
        if volume.GetID() not in self.dicom_sources:
            raise ValueError(f"{volume.GetName()} was not read from a DICOM series, and a DICOM SEG references the series it segments: "
                             "download the .seg.nrrd instead")
        headers, doubts = self.dicom_sources[volume.GetID()]
        model = segment_algorithm(node)
        version = next((package.version for package in self.packages() if package.name == model), "")
        with tempfile.TemporaryDirectory(prefix="swinssl-web-") as folder:
            path = write_dicom_segmentation(node, volume, headers, Path(folder) / "segmentation.dcm", (model, version) if model else None)
            if path is None:
                raise ValueError("every segment is empty: there is nothing to write as a DICOM SEG")
            self.server.state.seg_message = " ".join(["DICOM SEG written.", *(f"Note: {doubt}." for doubt in doubts)])
            return path.read_bytes()

    def scene_bytes(self) -> bytes:
        """The case (volumes, segmentation, views) as a Slicer .mrb; training previews and loss tables, which may
        come from other patients, are left out (not saved with the scene while it is written)."""
        scene = self.scene
        left_out = training_nodes(scene)
        saved_with_scene = [node.GetSaveWithScene() for node in left_out]
        url, root = scene.GetURL(), scene.GetRootDirectory()  # write_scene points them at the temporary file
        try:
            for node in left_out:
                node.SaveWithSceneOff()
            with tempfile.TemporaryDirectory(prefix="swinssl-web-") as folder:
                path = Path(folder) / "scene.mrb"
                if not self.slicer_app.io_manager.write_scene(path):
                    raise OSError("the scene could not be written as .mrb")
                return path.read_bytes()
        finally:
            for node, flag in zip(left_out, saved_with_scene):
                node.SetSaveWithScene(flag)
            scene.SetURL(url)
            scene.SetRootDirectory(root)

    def add_to_training_set(self) -> Path:
        """Saves the case (volume + corrected segmentation) into the training-set folder."""
        volume, node = self.result()
        written = self.training.export_scene_cases([(volume, node)], self.cases_folder)[0]
        state = self.server.state
        state.seg_cases = count_cases(self.cases_folder)
        state.seg_message = f"Added to the training set ({state.seg_cases} case(s) in {self.cases_folder})."
        return written

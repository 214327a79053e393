"""SwinSSLPretrain: self-supervised pretraining and fine-tuning of Swin UNETR from Slicer, with live loss
curves and inpainting previews (runs ``swinssl pretrain`` / ``swinssl finetune`` in the background)."""

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Annotated

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

if importlib.util.find_spec("swinssl_slicer") is None:  # source checkout: the shared logic is in the repository root
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from swinssl_slicer.desktop_install import ensure_in_slicer, show_unsupported_slicer  # noqa: E402
from swinssl_slicer.engine import engine_root  # noqa: E402

POLL_INTERVAL_MS = 500
DEFAULT_RUN_FOLDER = Path.home() / "SwinSSL" / "pretraining"


class SwinSSLPretrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SwinSSL Pretrain"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SwinSSL developers"]
        self.parent.helpText = (
            "Pretrain Swin UNETR on your own unlabelled volumes (inpainting, rotation and contrastive tasks of Tang et al. 2022) "
            "and watch the reconstructions improve; then fine-tune on segmented cases from this scene, folders or .mrb files. "
            "The fine-tuned model appears in SwinSSL Segment."
        )
        self.parent.acknowledgementText = "Swin UNETR: Tang et al., CVPR 2022; network from MONAI."


@parameterNodeWrapper
class SwinSSLPretrainParameterNode:
    """Settings saved with the scene. Folders bound to ctkPathLineEdit are ``pathlib.Path``: the only type
    parameterNodeWrapper's ctkPathLineEdit connector accepts (guiConnectors.py, Slicer 5.10 and 5.12)."""

    dataFolders: str = ""
    outputFolder: Path = DEFAULT_RUN_FOLDER
    preset: Annotated[str, Choice(["ct", "mr", "pet", "none"])] = "ct"
    roi: Annotated[int, WithinRange(64, 256)] = 96  # fine-tuning's minimum (FinetuneConfig; a test reads it from the engine)
    featureSize: Annotated[int, WithinRange(12, 96)] = 48
    steps: Annotated[int, WithinRange(1, 10000000)] = 1000
    batchSize: Annotated[int, WithinRange(1, 64)] = 2
    rotationWeight: Annotated[float, WithinRange(0.0, 10.0)] = 1.0
    contrastWeight: Annotated[float, WithinRange(0.0, 10.0)] = 1.0
    inpaintWeight: Annotated[float, WithinRange(0.0, 10.0)] = 1.0
    previewEvery: Annotated[int, WithinRange(1, 100000)] = 100
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    trainingVolume: vtkMRMLScalarVolumeNode
    trainingSegmentation: vtkMRMLSegmentationNode
    fineTuneSources: str = ""
    initFromWeights: bool = False
    initWeights: Path = DEFAULT_RUN_FOLDER
    classes: str = ""
    modelName: str = "my-model"
    fineTuneSteps: Annotated[int, WithinRange(1, 10000000)] = 1000


class SwinSSLPretrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._pairs = []
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if show_unsupported_slicer(self.layout):  # 5.8: a sentence in place of the panel, which is not built
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SwinSSLPretrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SwinSSLPretrainLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.addDataFolderButton.connect("clicked(bool)", self.onAddDataFolder)
        self.ui.removeDataFolderButton.connect("clicked(bool)", self.onRemoveDataFolder)
        self.ui.startButton.connect("clicked(bool)", lambda: self.onStartPretraining(resume=False))
        self.ui.resumeButton.connect("clicked(bool)", lambda: self.onStartPretraining(resume=True))
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.fineTuneStartButton.connect("clicked(bool)", self.onStartFineTuning)
        self.ui.fineTuneStopButton.connect("clicked(bool)", self.onStop)
        self.initializeParameterNode()
        self.updateButtons()

    def cleanup(self) -> None:
        """Slicer is closing or the module is reloaded: a running training is asked to stop gracefully (it
        checkpoints and exits by itself, so it never outlives Slicer for long and loses nothing)."""
        self._timer.stop()
        if self._run is not None:
            self.logic.training.stop(self._run)
        if self.logic is not None:  # None on an unsupported Slicer
            self.logic.removePreviewLabels()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        """A running training goes on (its files are on disk); its loss table and previews are recreated
        in the new scene at the next event. Scene pairs belong to the closed scene and are forgotten."""
        self._pairs = []
        self.ui.pairsList.clear()
        self.logic.removePreviewLabels()  # the previews go with the scene; their labels would stay on the next images
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        if self.logic is None:  # an unsupported Slicer: nothing was built
            return
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.ui.dataFoldersList.clear()
            for folder in filter(None, self._parameterNode.dataFolders.split(";")):
                self.ui.dataFoldersList.addItem(folder)

    def dataFolders(self) -> list:
        return [self.ui.dataFoldersList.item(i).text() for i in range(self.ui.dataFoldersList.count)]

    def onAddDataFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder of volumes (searched recursively)")
        if folder:
            self.ui.dataFoldersList.addItem(folder)
            self._parameterNode.dataFolders = ";".join(self.dataFolders())

    def onRemoveDataFolder(self) -> None:
        for item in self.ui.dataFoldersList.selectedItems():
            self.ui.dataFoldersList.takeItem(self.ui.dataFoldersList.row(item))
        self._parameterNode.dataFolders = ";".join(self.dataFolders())

    def onAddPair(self) -> None:
        """Adds the chosen volume and segmentation as a case. The list has no Remove, so a pair that fine-tuning would
        refuse (the segmentation made on another volume or filed under another study) is refused here, and a pair
        added twice is not added again (it would weigh double, and could be both trained on and validated on)."""
        from swinssl_slicer.case_pairing import pairing_problem

        volume, segmentation = self._parameterNode.trainingVolume, self._parameterNode.trainingSegmentation
        if not volume or not segmentation or (volume, segmentation) in self._pairs:
            return
        problem = pairing_problem(volume, segmentation)
        if problem is not None:
            slicer.util.errorDisplay(f"Not added: {problem.message}.")
            return
        self._pairs.append((volume, segmentation))
        self.ui.pairsList.addItem(f"{volume.GetName()} + {segmentation.GetName()}")

    def ensureDependencies(self) -> bool:
        """True when the engine can run; asks before installing (errors shown in a dialog, never during self-tests)."""
        return ensure_in_slicer()

    def folderIsFree(self, folder: Path) -> bool:
        """False, after saying which run holds it, when another live run writes into ``folder`` (asked before any question)."""
        try:
            self.logic.training.refuse_if_busy(folder)
        except ValueError as error:
            slicer.util.errorDisplay(f"Could not start: {error}.")
            return False
        return True

    def onStartPretraining(self, resume: bool) -> None:
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        if not self.folderIsFree(p.outputFolder):
            return
        overwrite = not resume and self.logic.training.holds_run(p.outputFolder, "pretrain")
        if overwrite and not slicer.util.confirmOkCancelDisplay(
                f"{p.outputFolder} holds a pretraining run. Replace it? (Resume continues it instead; the old run is kept "
                "until the new one has written its first checkpoint.)"):
            return
        with slicer.util.tryWithErrorDisplay("Could not start pretraining.", waitCursor=True):
            self._run = self.logic.training.start_pretraining(
                self.dataFolders(), p.outputFolder, p.preset, p.roi, p.featureSize, p.steps, p.batchSize,
                (p.rotationWeight, p.contrastWeight, p.inpaintWeight), p.previewEvery, p.device, resume=resume, overwrite=overwrite)
            self.startPolling()

    def onStartFineTuning(self) -> None:
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        runFolder = self.logic.training.run_folder(p.modelName)
        if not self.folderIsFree(runFolder):
            return
        held = [str(folder) for folder in (self.logic.training.default_model_folder(p.modelName), runFolder)
                if self.logic.training.holds_run(folder, "finetune")]  # the installed model, a stopped run's checkpoint
        overwrite = bool(held)
        if overwrite and not slicer.util.confirmOkCancelDisplay(f"A model or run named {p.modelName!r} exists ({', '.join(held)}). Replace it?"):
            return
        with slicer.util.tryWithErrorDisplay("Could not start fine-tuning.", waitCursor=True):
            sources = [s.strip() for s in p.fineTuneSources.split(";") if s.strip()]
            fromModel = p.initFromWeights and (Path(p.initWeights) / "model.json").is_file()  # it brings its ROI and feature size
            self._run = self.logic.training.start_finetuning_from_scene(
                p.modelName, self._pairs, sources, p.initWeights if p.initFromWeights else "random", [c.strip() for c in p.classes.split(",") if c.strip()] or None,
                None if fromModel else p.roi, None if fromModel else p.featureSize, p.fineTuneSteps, p.device, overwrite=overwrite)
            self.startPolling()

    def startPolling(self) -> None:
        self.ui.statusLog.clear()
        self.ui.progressBar.value = 0
        self._timer.start()
        self.updateButtons()

    def onStop(self) -> None:
        if self._run is not None:
            self.logic.training.stop(self._run)
            self.ui.statusLog.appendPlainText("Stopping after the current step (a checkpoint is written; Resume continues).")

    def onPoll(self) -> None:
        """Timer slot: any error ends polling here (an exception in a timer slot would repeat every tick);
        the training itself goes on and can be stopped from its run folder or resumed."""
        try:
            self.pollRun(self._run)
        except Exception as error:
            logging.error(str(error))
            self.ui.statusLog.appendPlainText(f"Error while following the run: {error}")
            self._timer.stop()
            self._run = None
            self.updateButtons()

    def pollRun(self, run) -> None:
        from swinssl.preview_text import metrics_text

        events = self.logic.training.poll(run)
        if run.show_previews:  # once per run: later previews replace the same three volumes in place
            self.logic.showPreviews()
            run.show_previews = False
        for event in events:
            if event["event"] == "preview":
                self.logic.labelPreviews(event["step"])
                self.ui.statusLog.appendPlainText(f"Preview, step {event['step']}: {metrics_text(event)}")
        if run.show_plot:  # once per run, Resume included
            self.logic.showLossPlot(run.chart_node_id)
            run.show_plot = False
        if run.total or run.preparing:  # steps, or the volumes being prepared before the first step
            self.ui.progressBar.value = int(100 * run.step / run.total) if run.total else 0
            self.ui.etaLabel.text = run.progress_text()
        if run.dice:
            self.ui.diceLabel.text = f"{run.dice_label}: " + ", ".join(f"{name} {value:.3f}" for name, value in run.dice.items())
        while run.messages:
            self.ui.statusLog.appendPlainText(run.messages.pop(0))
        status = run.status()  # None until the engine and any launcher have exited
        if status is not None:
            self.ui.statusLog.appendPlainText(status)
            self._timer.stop()
            self._run = None
            self.updateButtons()

    def updateButtons(self) -> None:
        running = self._run is not None
        for button in (self.ui.startButton, self.ui.resumeButton, self.ui.fineTuneStartButton):
            button.enabled = not running
        self.ui.stopButton.enabled = self.ui.fineTuneStopButton.enabled = running


class SwinSSLPretrainLogic(ScriptedLoadableModuleLogic):
    """Slicer-facing logic; the work is in swinssl_slicer.training_logic.TrainingLogic (no Qt)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._training = None
        self._previewLabels = {}  # slice view name -> its vtkCornerAnnotation

    def getParameterNode(self):
        return SwinSSLPretrainParameterNode(super().getParameterNode())

    @property
    def training(self):
        if self._training is None:
            from swinssl_slicer.training_logic import TrainingLogic

            self._training = TrainingLogic(slicer.mrmlScene, temp_root=Path(slicer.app.temporaryPath) / "SwinSSL")
        return self._training

    def showPreviews(self) -> None:
        """Original / masked / reconstructed crop side by side (red, yellow, green views, axial) with the plot:
        called once per run, so a layout the user picks afterwards is left alone."""
        from swinssl_slicer.training_logic import PREVIEW_KINDS

        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotView)
        slicer.app.processEvents()  # let the new views take their size before fitting
        nodes = self.training.preview_nodes()
        for view, kind in zip(("Red", "Yellow", "Green"), PREVIEW_KINDS):
            if kind in nodes:
                widget = layoutManager.sliceWidget(view)
                widget.mrmlSliceNode().SetOrientationToAxial()
                widget.mrmlSliceCompositeNode().SetBackgroundVolumeID(nodes[kind].GetID())
                widget.sliceLogic().FitSliceToAll()

    def labelPreviews(self, step: int) -> None:
        """Writes original / masked (holes filled with noise) / reconstruction and the step in the upper-left corner of
        the red, yellow and green views. Own annotation actors: the DataProbe's slice annotations rewrite every
        corner of a view's built-in ``cornerAnnotation()`` on each update."""
        import vtk

        from swinssl.preview_text import PANEL_LABELS
        from swinssl_slicer.training_logic import PREVIEW_KINDS

        layoutManager = slicer.app.layoutManager()
        for view, kind in zip(("Red", "Yellow", "Green"), PREVIEW_KINDS):
            widget = layoutManager.sliceWidget(view)
            if widget is None:
                continue
            sliceView = widget.sliceView()
            if view not in self._previewLabels:
                label = vtk.vtkCornerAnnotation()
                label.SetMaximumFontSize(16)
                label.GetTextProperty().SetColor(1.0, 0.83, 0.0)
                label.GetTextProperty().ShadowOn()
                sliceView.renderWindow().GetRenderers().GetFirstRenderer().AddViewProp(label)
                self._previewLabels[view] = label
            self._previewLabels[view].SetText(vtk.vtkCornerAnnotation.UpperLeft, f"{PANEL_LABELS[kind]}, step {step}")
            sliceView.scheduleRender()

    def removePreviewLabels(self) -> None:
        """Takes the preview labels off the red, yellow and green views: the scene holding the previews is closing (the
        next case's images must not read "Reconstruction, step N") or the module goes away; a next preview adds them again."""
        layoutManager = slicer.app.layoutManager()
        for view, label in self._previewLabels.items():
            widget = layoutManager.sliceWidget(view) if layoutManager is not None else None
            if widget is not None:
                widget.sliceView().renderWindow().GetRenderers().GetFirstRenderer().RemoveViewProp(label)
                widget.sliceView().scheduleRender()
        self._previewLabels = {}

    def showLossPlot(self, chartNodeId: str) -> None:
        slicer.modules.plots.logic().ShowChartInLayout(slicer.mrmlScene.GetNodeByID(chartNodeId))


class SwinSSLPretrainTest(ScriptedLoadableModuleTest):
    """In-Slicer test on the demo CT the extension carries (real abdominal CT): a tiny pretraining is
    stopped through the stop-request file after its first steps, then resumed to the end; the loss table
    holds every step once and the three preview volumes lie inside the CT."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_pretraining_stops_resumes_and_streams_into_the_scene()

    def waitFor(self, logic, run) -> str:
        import time

        while run.status() is None:
            logic.training.poll(run)
            slicer.app.processEvents()
            time.sleep(0.2)
        logic.training.poll(run)
        return run.engine.outcome

    def test_pretraining_stops_resumes_and_streams_into_the_scene(self):
        import tempfile
        import time

        from swinssl_slicer.desktop_install import prepare_self_test

        self.delayDisplay("Installing what the engine needs, if anything is missing")
        prepare_self_test((slicer.app.majorVersion, slicer.app.minorVersion))  # raises rather than pass untested
        import numpy as np

        from swinssl_slicer.training_logic import PREVIEW_KINDS

        logic = SwinSSLPretrainLogic()
        ct = engine_root() / "swinssl" / "resources" / "demo_ct.nii.gz"
        folder = Path(tempfile.mkdtemp(dir=slicer.app.temporaryPath))
        tiny = ["--projection-dim", "16", "--cache-dir", str(folder / "cache"), "--spacing", "3", "3", "3"]
        run = logic.training.start_pretraining([str(ct)], folder / "run", roi=32, feature_size=12, steps=6, batch_size=2,
                                               preview_every=2, device="cpu", extra=tiny)
        while run.step < 1 and run.engine.running:
            logic.training.poll(run)
            time.sleep(0.1)
        logic.training.stop(run)
        self.assertEqual(self.waitFor(logic, run), "stopped")
        stoppedAt = run.step
        self.assertLess(stoppedAt, 6)
        run = logic.training.start_pretraining([], folder / "run", steps=6, resume=True)
        self.assertEqual(self.waitFor(logic, run), "done", run.engine.log_tail())
        table = slicer.mrmlScene.GetNodeByID(run.table_node_id).GetTable()
        self.assertEqual([table.GetValue(row, 0).ToDouble() for row in range(table.GetNumberOfRows())], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        previews = logic.training.preview_nodes()
        self.assertEqual(sorted(previews), sorted(PREVIEW_KINDS))
        volume = slicer.util.loadVolume(str(ct))
        bounds, crop = np.zeros(6), np.zeros(6)
        volume.GetRASBounds(bounds)
        previews["original"].GetRASBounds(crop)
        self.assertTrue(all(crop[2 * i] >= bounds[2 * i] - 3 and crop[2 * i + 1] <= bounds[2 * i + 1] + 3 for i in range(3)))
        self.delayDisplay("SwinSSLPretrain test passed")

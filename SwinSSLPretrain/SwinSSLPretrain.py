"""SwinSSLPretrain: self-supervised pretraining and fine-tuning of Swin UNETR from Slicer, with live loss
curves and inpainting previews (runs ``swinssl pretrain`` / ``swinssl finetune`` in the background)."""

from pathlib import Path
from typing import Annotated

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

POLL_INTERVAL_MS = 500


class SwinSSLPretrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SwinSSL Pretrain"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["SwinSSLSegment"]
        self.parent.contributors = ["SwinSSL developers"]
        self.parent.helpText = (
            "Pretrain Swin UNETR on your own unlabelled volumes (inpainting, rotation and contrastive tasks of Tang et al. 2022) "
            "and watch the reconstructions improve; then fine-tune on segmented cases from this scene, folders or .mrb files. "
            "The fine-tuned model appears in SwinSSL Segment."
        )
        self.parent.acknowledgementText = "Swin UNETR: Tang et al., CVPR 2022; network from MONAI."


@parameterNodeWrapper
class SwinSSLPretrainParameterNode:
    dataFolders: str = ""
    outputFolder: str = ""
    preset: Annotated[str, Choice(["ct", "mr", "pet", "none"])] = "ct"
    roi: Annotated[int, WithinRange(32, 256)] = 96
    featureSize: Annotated[int, WithinRange(12, 96)] = 48
    steps: Annotated[int, WithinRange(1, 10000000)] = 1000
    batchSize: Annotated[int, WithinRange(1, 64)] = 2
    rotationWeight: float = 1.0
    contrastWeight: float = 1.0
    inpaintWeight: float = 1.0
    previewEvery: Annotated[int, WithinRange(1, 100000)] = 100
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    trainingVolume: vtkMRMLScalarVolumeNode
    trainingSegmentation: vtkMRMLSegmentationNode
    fineTuneSources: str = ""
    initWeights: str = ""
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
        self._timer.stop()
        if self._run is not None:
            self.logic.training.stop(self._run)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
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
        volume, segmentation = self._parameterNode.trainingVolume, self._parameterNode.trainingSegmentation
        if volume and segmentation:
            self._pairs.append((volume, segmentation))
            self.ui.pairsList.addItem(f"{volume.GetName()} + {segmentation.GetName()}")

    def onStartPretraining(self, resume: bool) -> None:
        if not self.logic.ensureDependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not start pretraining.", waitCursor=True):
            self._run = self.logic.training.start_pretraining(
                self.dataFolders(), Path(p.outputFolder), p.preset, p.roi, p.featureSize, p.steps, p.batchSize,
                (p.rotationWeight, p.contrastWeight, p.inpaintWeight), p.previewEvery, p.device, resume=resume)
            self.startPolling()

    def onStartFineTuning(self) -> None:
        if not self.logic.ensureDependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not start fine-tuning.", waitCursor=True):
            out = self.logic.training.default_model_folder(p.modelName)
            scenes = [s for s in p.fineTuneSources.split(";") if s.strip()]
            if self._pairs:
                scenes.append(str(self.logic.training.export_scene_cases(self._pairs, out / "scene_cases")[0].parent))
            folders = [s for s in scenes if Path(s).is_dir() and not any(Path(s).glob("*.seg.nrrd"))]
            scenes = [s for s in scenes if s not in folders]
            self._run = self.logic.training.start_finetuning(
                out, folders, scenes, p.initWeights or "random", p.classes.split() or None, p.roi, p.featureSize, p.fineTuneSteps, p.device)
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
        run = self._run
        for event in self.logic.training.poll(run):
            if event["event"] == "preview":
                self.logic.showPreview()
            elif event["event"] == "progress" and run.table_node_id and event["step"] == 1:
                self.logic.showLossPlot(run.chart_node_id)
        if run.total:
            self.ui.progressBar.value = int(100 * run.step / run.total)
            eta = f", about {run.eta_s / 60:.0f} min left" if run.eta_s else ""
            self.ui.etaLabel.text = f"step {run.step} / {run.total}{eta}"
        if run.dice:
            self.ui.diceLabel.text = ", ".join(f"{name}: {value:.3f}" for name, value in run.dice.items())
        while run.messages:
            self.ui.statusLog.appendPlainText(run.messages.pop(0))
        if not run.engine.running:
            code = run.engine.exit_code
            self.ui.statusLog.appendPlainText({0: "Finished.", 3: "Stopped; press Resume to continue."}.get(code, f"Failed: {run.error or run.engine.log_tail(800)}"))
            self._timer.stop()
            self._run = None
            self.updateButtons()

    def updateButtons(self) -> None:
        running = self._run is not None
        for button in (self.ui.startButton, self.ui.resumeButton, self.ui.fineTuneStartButton):
            button.enabled = not running
        self.ui.stopButton.enabled = self.ui.fineTuneStopButton.enabled = running


class SwinSSLPretrainLogic(ScriptedLoadableModuleLogic):
    """Slicer-facing logic; the work is in SwinSSLPretrainLib.training_logic.TrainingLogic (no Qt)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._training = None

    def getParameterNode(self):
        return SwinSSLPretrainParameterNode(super().getParameterNode())

    def ensureDependencies(self) -> bool:
        from SwinSSLSegment import SwinSSLSegmentLogic

        return SwinSSLSegmentLogic().ensureDependencies()

    @property
    def training(self):
        if self._training is None:
            from SwinSSLPretrainLib.training_logic import TrainingLogic

            self._training = TrainingLogic(slicer.mrmlScene)
        return self._training

    def showPreview(self) -> None:
        """Original / masked / reconstructed crop side by side (red, yellow, green views, axial), plot below."""
        from SwinSSLPretrainLib.training_logic import PREVIEW_ATTRIBUTE, PREVIEW_KINDS

        layout = getattr(slicer.vtkMRMLLayoutNode, "SlicerLayoutFourUpPlotView", slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        slicer.app.layoutManager().setLayout(layout)
        nodes = {n.GetAttribute(PREVIEW_ATTRIBUTE): n for n in slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode") if n.GetAttribute(PREVIEW_ATTRIBUTE)}
        for view, kind in zip(("Red", "Yellow", "Green"), PREVIEW_KINDS):
            if kind in nodes:
                widget = slicer.app.layoutManager().sliceWidget(view)
                widget.mrmlSliceNode().SetOrientationToAxial()
                widget.mrmlSliceCompositeNode().SetBackgroundVolumeID(nodes[kind].GetID())
                widget.sliceLogic().FitSliceToAll()

    def showLossPlot(self, chartNodeId: str) -> None:
        slicer.modules.plots.logic().ShowChartInLayout(slicer.mrmlScene.GetNodeByID(chartNodeId))


class SwinSSLPretrainTest(ScriptedLoadableModuleTest):
    """In-Slicer test: a 4-step pretraining on a synthetic volume fills the loss table and the three preview volumes."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_pretraining_streams_into_the_scene()

    def test_pretraining_streams_into_the_scene(self):
        import tempfile
        import time

        import numpy as np
        import SimpleITK as sitk

        logic = SwinSSLPretrainLogic()
        if not logic.ensureDependencies():
            self.skipTest("engine dependencies are not installed")
        folder = Path(tempfile.mkdtemp())
        sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 400, (40, 48, 48)).astype(np.int16)), str(folder / "ct.nrrd"))
        run = logic.training.start_pretraining([str(folder)], folder / "run", roi=32, feature_size=12, steps=4, batch_size=2,
                                               preview_every=2, device="cpu", extra=["--cache-dir", str(folder / "cache")])
        while run.engine.running:
            logic.training.poll(run)
            slicer.app.processEvents()
            time.sleep(0.2)
        logic.training.poll(run)
        self.assertEqual(run.engine.exit_code, 0, run.engine.log_tail())
        self.assertEqual(slicer.mrmlScene.GetNodeByID(run.table_node_id).GetTable().GetNumberOfRows(), 4)
        self.assertEqual(len([n for n in slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode") if n.GetAttribute("SwinSSL.Preview")]), 3)
        self.delayDisplay("SwinSSLPretrain test passed")

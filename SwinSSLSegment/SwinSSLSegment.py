"""SwinSSLSegment: segment a volume with a SwinSSL model package (runs ``swinssl segment`` in the background)."""

import logging
from pathlib import Path
from typing import Annotated

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from SwinSSLSegmentLib.engine import ensure_engine_on_path, missing_packages

POLL_INTERVAL_MS = 250


class SwinSSLSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SwinSSL Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SwinSSL developers"]
        self.parent.helpText = (
            "Segment a CT/MR/PET volume with a self-supervised Swin UNETR model package. Pick the input volume(s) "
            "and a model, click Segment; the result is a segmentation with the model's named, coloured segments."
        )
        self.parent.acknowledgementText = (
            "Swin UNETR and its self-supervised pretraining: Tang et al., CVPR 2022; network from MONAI. "
            "Demo data: TotalSegmentator test data (Apache-2.0)."
        )


@parameterNodeWrapper
class SwinSSLSegmentParameterNode:
    """Settings saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    secondInputVolume: vtkMRMLScalarVolumeNode
    modelPath: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.5
    fast: bool = False
    outputSegmentation: vtkMRMLSegmentationNode


class SwinSSLSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SwinSSLSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SwinSSLSegmentLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.importButton.connect("clicked(bool)", self.onImportButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._timer.stop()
        if self._run is not None:
            self.logic.cancel(self._run)
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
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.selectModel(self._parameterNode.modelPath)

    def refreshModels(self) -> None:
        self.ui.modelSelector.clear()
        for package in self.logic.segmentation.available_models() if self.logic.ready() else []:
            channels = " + ".join(c.modality for c in package.channels)
            self.ui.modelSelector.addItem(f"{package.name} {package.version} ({channels}, {len(package.labels.labels)} segments)", str(package.path))
        if self._parameterNode:
            self.selectModel(self._parameterNode.modelPath)

    def selectModel(self, path: str) -> None:
        index = self.ui.modelSelector.findData(path)
        if index >= 0:
            self.ui.modelSelector.setCurrentIndex(index)

    def onModelChanged(self, index: int) -> None:
        path = self.ui.modelSelector.itemData(index) if index >= 0 else ""
        if self._parameterNode and path:
            self._parameterNode.modelPath = path
        modalities = self.logic.channelNames(path) if path else ["Input"]
        self.ui.inputLabel.text = f"{modalities[0]} volume:"
        twoChannels = len(modalities) > 1
        self.ui.secondInputLabel.visible = self.ui.secondInputSelector.visible = twoChannels
        if twoChannels:
            self.ui.secondInputLabel.text = f"{modalities[1]} volume:"

    def onImportButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Model package, MONAI bundle or fine-tuning run")
        if not folder or not self.logic.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Import failed.", waitCursor=True):
            path = self.logic.importModel(Path(folder))
            self.refreshModels()
            self.selectModel(str(path))

    def onApplyButton(self) -> None:
        if self._run is not None:
            self.logic.cancel(self._run)
            self.finishRun("Cancelled.")
            return
        if not self.logic.ensureDependencies():
            return
        parameters = self._parameterNode
        inputs = [parameters.inputVolume] + ([parameters.secondInputVolume] if self.ui.secondInputSelector.visible else [])
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            self._run = self.logic.segmentation.start(inputs, parameters.modelPath, parameters.device, parameters.overlap, parameters.fast)
            self.ui.applyButton.text = "Cancel"
            self.ui.progressBar.value = 0
            self.ui.statusLog.clear()
            self._timer.start()

    def onPoll(self) -> None:
        run = self._run
        for event in self.logic.segmentation.poll(run):
            if event["event"] in ("warning", "error"):
                self.ui.statusLog.appendPlainText(event.get("reason") or event.get("message"))
        self.ui.progressBar.value = int(100 * run.progress)
        if run.engine.running:
            return
        try:
            node = self.logic.segmentation.finish(run, self._parameterNode.outputSegmentation)
            self._parameterNode.outputSegmentation = node
            self.finishRun(f"Done: {node.GetName()}")
        except Exception as error:  # shown to the user; the scene is unchanged
            logging.error(str(error))
            self.finishRun(f"Failed: {error}")

    def finishRun(self, message: str) -> None:
        self._timer.stop()
        self._run = None
        self.ui.applyButton.text = "Segment"
        self.ui.statusLog.appendPlainText(message)


class SwinSSLSegmentLogic(ScriptedLoadableModuleLogic):
    """Slicer-facing logic; the work is in SwinSSLSegmentLib.segment_logic.SegmentationLogic (no Qt)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._segmentation = None

    def getParameterNode(self):
        return SwinSSLSegmentParameterNode(super().getParameterNode())

    def ready(self) -> bool:
        return not missing_packages()

    @property
    def segmentation(self):
        if self._segmentation is None:
            ensure_engine_on_path()
            from SwinSSLSegmentLib.segment_logic import SegmentationLogic

            self._segmentation = SegmentationLogic(slicer.mrmlScene)
        return self._segmentation

    def channelNames(self, path: str) -> list:
        from swinssl.package import load_package

        return [channel.modality for channel in load_package(path).channels]

    def importModel(self, source: Path) -> Path:
        from swinssl.models import import_model

        return import_model(source)

    def ensureDependencies(self) -> bool:
        """Installs missing engine dependencies after the user agrees (torch through the PyTorch extension)."""
        missing = missing_packages()
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(f"SwinSSL needs these Python packages: {', '.join(missing)}. Install them now?"):
            return False
        with slicer.util.WaitCursor():
            if "torch" in missing:
                import PyTorchUtils

                if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
                    slicer.util.errorDisplay("PyTorch could not be installed; see the PyTorch extension's log.")
                    return False
            rest = [requirement for requirement in missing if requirement != "torch"]
            if rest:
                if hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):
                    slicer.packaging.pip_ensure(rest)
                else:
                    slicer.util.pip_install(rest)
        still = missing_packages()
        if still:
            slicer.util.infoDisplay(f"Please restart 3D Slicer to finish installing: {', '.join(still)}")
            return False
        return True


class SwinSSLSegmentTest(ScriptedLoadableModuleTest):
    """In-Slicer test: a tiny random model package segments a synthetic volume; segments must carry its names."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_synthetic_volume()

    def test_segment_synthetic_volume(self):
        import tempfile
        import time

        import numpy as np

        logic = SwinSSLSegmentLogic()
        if not logic.ensureDependencies():
            self.skipTest("engine dependencies are not installed")
        from swinssl.labels.table import LabelTable
        from swinssl.network import build_swin_unetr
        from swinssl.package import InputChannel, ModelPackage

        folder = Path(tempfile.mkdtemp())
        package = ModelPackage("selftest", LabelTable.from_names(["organ a", "organ b"]), [InputChannel()], (4.0, 4.0, 4.0), 64, 12)
        package.save(folder / "selftest", build_swin_unetr(1, 3, 12).state_dict())
        volume = slicer.util.addVolumeFromArray(np.random.default_rng(0).integers(-1000, 400, (40, 50, 60)).astype(np.int16))
        run = logic.segmentation.start([volume], folder / "selftest", device="cpu")
        while run.engine.running:
            logic.segmentation.poll(run)
            slicer.app.processEvents()
            time.sleep(0.2)
        node = logic.segmentation.finish(run)
        segmentation = node.GetSegmentation()
        self.assertEqual([segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())], ["organ a", "organ b"])
        self.delayDisplay("SwinSSLSegment test passed")

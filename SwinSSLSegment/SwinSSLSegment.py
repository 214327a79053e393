"""SwinSSLSegment: segment a volume with a SwinSSL model package (runs ``swinssl segment`` in the background)."""

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional  # Optional, not X | None: Slicer 5.8's Python 3.9 evaluates these at import and must reach the version message

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

if importlib.util.find_spec("swinssl_slicer") is None:  # source checkout: the shared logic is in the repository root
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from swinssl_slicer.desktop_install import ensure_in_slicer, show_unsupported_slicer, unsupported_slicer  # noqa: E402
from swinssl_slicer.engine import engine_root  # noqa: E402
from swinssl_slicer.show_3d import show_3d_by_default, show_in_3d  # noqa: E402

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
            "and a model, click Segment; the result is a segmentation with the model's named, coloured segments. "
            "Correct and retrain: fix the result in Segment Editor, add it to the training set and fine-tune the model on it."
        )
        self.parent.acknowledgementText = (
            "Swin UNETR and its self-supervised pretraining: Tang et al., CVPR 2022; network from MONAI. "
            "Demo data: TotalSegmentator test data (Apache-2.0)."
        )
        if not unsupported_slicer((slicer.app.majorVersion, slicer.app.minorVersion)):  # 5.8: the engine's Python is too new
            slicer.app.connect("startupCompleted()", registerSampleData)  # Sample Data exists once Slicer has started


def registerSampleData() -> None:
    """Adds the demo CT the extension carries to the Sample Data module (section SwinSSL), with its thumbnail."""
    import SampleData

    from swinssl_slicer.sample_data import demo_ct_source

    thumbnail = Path(__file__).resolve().parent / "Resources" / "Icons" / "SwinSSLDemoCT.png"
    SampleData.SampleDataLogic.registerCustomSampleDataSource(**demo_ct_source(thumbnail))


@parameterNodeWrapper
class SwinSSLSegmentParameterNode:
    """Settings saved with the scene. ``modelPath`` is set from the model list (no widget binding)."""

    inputVolume: vtkMRMLScalarVolumeNode
    secondInputVolume: vtkMRMLScalarVolumeNode
    modelPath: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.5
    fast: bool = False
    confidence: bool = False
    backend: Annotated[str, Choice(["auto", "torch", "openvino"])] = "auto"  # swinssl.package.BACKENDS
    outputSegmentation: vtkMRMLSegmentationNode
    show3D: bool = True  # set to show_3d_by_default(input) when the input changes: unticked for a large volume
    trainingSet: Path  # "Add to training set" writes here; set to the shared default when empty
    fineTuneSteps: Annotated[int, WithinRange(1, 1000000)] = 50  # training_logic.DEFAULT_TUNING_STEPS (not imported before the engine's requirements are)


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
        self._download = None  # a catalogue download
        self._downloadTimer = qt.QTimer()
        self._downloadTimer.setInterval(POLL_INTERVAL_MS)
        self._downloadTimer.connect("timeout()", self.onPollDownload)
        self._tuning = None  # the fine-tuning run of "Correct and retrain"
        self._confidence = None  # (map, input volume) node IDs of the latest confidence map
        self._tuningTimer = qt.QTimer()
        self._tuningTimer.setInterval(POLL_INTERVAL_MS)
        self._tuningTimer.connect("timeout()", self.onPollTuning)
        self._show3DInputID = None  # the input whose default "Show 3D" was last set

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if show_unsupported_slicer(self.layout):  # 5.8: a sentence in place of the panel, which is not built
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SwinSSLSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        from swinssl_slicer.sample_data import first_step

        self.ui.firstStepLabel.text = first_step()
        self.logic = SwinSSLSegmentLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.confidenceCheckBox.connect("toggled(bool)", self.onConfidenceToggled)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.show3DCheckBox.connect("clicked(bool)", self.onShow3DClicked)  # clicked: by the user only, not by setChecked
        self.ui.importButton.connect("clicked(bool)", self.onImportButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.catalogueSelector.connect("currentIndexChanged(int)", self.onCatalogueEntryChanged)
        self.ui.downloadButton.connect("clicked(bool)", self.onDownload)
        self.ui.addToTrainingSetButton.connect("clicked(bool)", self.onAddToTrainingSet)
        self.ui.trainingSetEdit.connect("currentPathChanged(QString)", lambda path: self.showCaseCount(Path(path)))
        self.ui.fineTuneButton.connect("clicked(bool)", lambda: self.onFineTune(resume=False))
        self.ui.fineTuneResumeButton.connect("clicked(bool)", lambda: self.onFineTune(resume=True))
        self.ui.fineTuneStopButton.connect("clicked(bool)", self.onStopFineTune)
        self.initializeParameterNode()  # before the model list: choosing a model writes to the parameter node

    def cleanup(self) -> None:
        """A segmentation is cancelled; a fine-tuning is asked to stop gracefully (it checkpoints; Resume continues)."""
        self._timer.stop()
        self._tuningTimer.stop()
        self._downloadTimer.stop()
        if self._download is not None:  # the partial file stays: Download again resumes it
            self.logic.catalogue.cancel(self._download)
            self._download = None
        if self._run is not None:
            self.logic.segmentation.cancel(self._run)
            self._run = None
        if self._tuning is not None:
            self.logic.training.stop(self._tuning)
            self._tuning = None
        if self.logic is not None:  # None on an unsupported Slicer
            self.logic.close()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        if self._run is not None:  # the shared logic cancels it too; here the button and log are reset
            self.logic.segmentation.cancel(self._run)
            self.finishRun("Cancelled: the scene was closed.")
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        if self.logic is None:  # an unsupported Slicer: nothing was built
            return
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if str(self._parameterNode.trainingSet) in ("", "."):
            self._parameterNode.trainingSet = self.logic.defaultTrainingSet()
        self.showCaseCount()

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.refreshModels()

    def refreshModels(self) -> None:
        """Lists installed packages (model.json only) and selects the saved model, else the first one; a saved model that
        cannot be read (a broken model.json outside the models folder) is named in the log, not selected."""
        saved = self._parameterNode.modelPath if self._parameterNode else ""
        chosen = self.logic.chooseModel(saved)
        problem = self.logic.segmentation.model_problem(saved) if saved and chosen != saved else None
        if problem:
            self.ui.statusLog.appendPlainText(f"The model chosen before cannot be used: {problem}. " + (f"Selected instead: {Path(chosen).name}." if chosen else ""))
        wasBlocked = self.ui.modelSelector.blockSignals(True)
        self.ui.modelSelector.clear()
        for package in self.logic.availableModels():
            channels = " + ".join(c.modality for c in package.channels)
            self.ui.modelSelector.addItem(f"{package.name} {package.version} ({channels}, {len(package.labels.labels)} segments)", str(package.path))
        if chosen and self.ui.modelSelector.findData(chosen) < 0:  # a package outside the models folder (saved in the scene)
            self.ui.modelSelector.addItem(f"{Path(chosen).name} ({chosen})", chosen)
        self.ui.modelSelector.setCurrentIndex(self.ui.modelSelector.findData(chosen))
        self.ui.modelSelector.blockSignals(wasBlocked)
        self.onModelChanged(self.ui.modelSelector.currentIndex)
        self.refreshCatalogue()

    def refreshCatalogue(self) -> None:
        """The catalogue's entries, installed ones marked (reads the catalogue JSON only)."""
        previous = self.ui.catalogueSelector.itemData(self.ui.catalogueSelector.currentIndex)
        wasBlocked = self.ui.catalogueSelector.blockSignals(True)
        self.ui.catalogueSelector.clear()
        for entry in self.logic.catalogue.entries():
            self.ui.catalogueSelector.addItem(self.logic.catalogue.label(entry), entry.name)  # weights marked: not in the model list
        self.ui.catalogueSelector.setCurrentIndex(max(0, self.ui.catalogueSelector.findData(previous)))
        self.ui.catalogueSelector.blockSignals(wasBlocked)
        self.onCatalogueEntryChanged(self.ui.catalogueSelector.currentIndex)

    def onCatalogueEntryChanged(self, index: int) -> None:
        entries = {entry.name: entry for entry in self.logic.catalogue.entries()}
        entry = entries.get(self.ui.catalogueSelector.itemData(index)) if index >= 0 else None
        self.ui.catalogueDetailLabel.text = self.logic.catalogue.describe(entry) if entry else ""
        self.ui.downloadButton.enabled = entry is not None and not self.logic.catalogue.is_installed(entry) and self._download is None

    def onModelChanged(self, index: int) -> None:
        """Shows the chosen model's inputs and training; one whose model.json broke since it was listed is named, not read."""
        path = self.ui.modelSelector.itemData(index) if index >= 0 else ""
        if self._parameterNode:
            self._parameterNode.modelPath = path or ""
        problem = self.logic.segmentation.model_problem(path) if path else None
        usable = bool(path) and problem is None
        modalities = self.logic.channelNames(path) if usable else ["Input"]
        self.ui.modelInfoLabel.text = self.logic.modelDetails(path) if usable else (f"This model cannot be used: {problem}" if problem else "")
        self.ui.inputLabel.text = f"{modalities[0]} volume:"
        twoChannels = len(modalities) > 1
        self.ui.secondInputLabel.visible = self.ui.secondInputSelector.visible = twoChannels
        if twoChannels:
            self.ui.secondInputLabel.text = f"{modalities[1]} volume:"
        self.ui.applyButton.enabled = usable
        self.ui.applyButton.toolTip = "" if usable else (problem or "No model is installed: Import... adds one")

    def ensureDependencies(self) -> bool:
        """True when the engine can run; asks before installing (errors shown in a dialog, never during self-tests)."""
        if not ensure_in_slicer():
            return False
        self.refreshModels()
        return True

    def onImportButton(self) -> None:
        """Runs ``swinssl models import`` in the background (it loads the weights with torch and MONAI: never in Slicer's
        process); the imported model is selected when it is installed."""
        if self._download is not None:
            return
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Model package, MONAI bundle or fine-tuning run")
        if not folder or not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Could not start the import.", waitCursor=True):
            self.followInstall(self.logic.catalogue.start_import(Path(folder)))

    def onApplyButton(self) -> None:
        if self._run is not None:
            run = self._run
            with slicer.util.WaitCursor():  # returns within seconds; a process that outlived its kill is named
                self.logic.segmentation.cancel(run)
            self.finishRun("Cancelled." + (f" {run.error}" if run.error else ""))
            return
        if not self.ensureDependencies():
            return
        self.startRun(allowMismatch=False)

    def startRun(self, allowMismatch: bool) -> None:
        """Starts the engine on the chosen volumes; ``allowMismatch``: the user confirmed an input unlike the model's."""
        parameters = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            inputs = [parameters.inputVolume, parameters.secondInputVolume][: len(self.logic.channelNames(parameters.modelPath))]
            self._run = self.logic.segmentation.start(inputs, parameters.modelPath, parameters.device, parameters.overlap, parameters.fast,
                                                      confidence=parameters.confidence, allow_mismatch=allowMismatch, backend=parameters.backend)
            self.ui.applyButton.text = "Cancel"
            self.ui.progressBar.value = 0
            self.ui.statusLog.clear()
            self._timer.start()

    def onPoll(self) -> None:
        """Timer slot: any error ends the run here (an exception in a timer slot would repeat every tick)."""
        run = self._run
        try:
            self.logic.segmentation.poll(run)
            while run.messages:
                self.ui.statusLog.appendPlainText(run.messages.pop(0))
            self.ui.progressBar.value = int(100 * run.progress)
            if run.engine.running:
                return
            with slicer.util.WaitCursor():  # loading the result (its 3-D surfaces when Show 3D is ticked), then its statistics
                node = self.logic.segmentation.finish(run, self._parameterNode.outputSegmentation, show_3d=self._parameterNode.show3D)
                self._parameterNode.outputSegmentation = node
                if run.confidence_node_id:  # over the input in the slice views (while the box is ticked); summary in the log
                    self._confidence = run.confidence_node_id, run.input_node_ids[0]
                    self.onConfidenceToggled(self._parameterNode.confidence)
                while run.messages:
                    self.ui.statusLog.appendPlainText(run.messages.pop(0))
                self.logStatistics(node, slicer.mrmlScene.GetNodeByID(run.input_node_ids[0]))  # the whole volume: seconds for a large CT
            self.finishRun(f"{run.done_message(node.GetSegmentation().GetNumberOfSegments())} in {node.GetName()}")
        except Exception as error:  # shown to the user; the scene is unchanged
            logging.error(str(error))
            self.logic.segmentation.cancel(run)
            self.finishRun(f"{'Not segmented' if run.mismatch else 'Failed'}: {error}")
            if run.mismatch and slicer.util.confirmYesNoDisplay(f"{error}.\n\nSegment it anyway? The result is likely to be wrong."):
                self.startRun(allowMismatch=True)

    def logStatistics(self, segmentation, volume) -> None:
        """Each segment's volume (mL) and mean ± SD of the input in the log, as the web app's table shows them."""
        from swinssl_slicer.segment_statistics import intensity_unit, segment_statistics

        unit = intensity_unit(volume)
        self.ui.statusLog.appendPlainText("Segment statistics (volume, mean ± SD of the input):")
        for row in segment_statistics(segmentation, volume):
            self.ui.statusLog.appendPlainText(f"  {row.line(unit)}")

    def onInputChanged(self, node) -> None:
        """Another input volume: Show 3D goes to its default for it (unticked for a large volume); the user may change it."""
        nodeID = node.GetID() if node else None
        if self._parameterNode is None or nodeID == self._show3DInputID:
            return
        self._show3DInputID = nodeID
        self._parameterNode.show3D = show_3d_by_default(node)

    def onShow3DClicked(self, checked: bool) -> None:
        """Builds (ticked) or removes the 3-D surfaces of the segmentation under Output."""
        node = self._parameterNode.outputSegmentation if self._parameterNode else None
        if node:
            with slicer.util.WaitCursor():
                show_in_3d(node, checked)

    def onConfidenceToggled(self, checked: bool) -> None:
        """Shows the latest confidence map over its input volume, or takes every confidence map off the slice views."""
        self.logic.showConfidence(*(self._confidence or (None, None)), shown=checked)

    def finishRun(self, message: str) -> None:
        self._timer.stop()
        self._run = None
        self.ui.applyButton.text = "Segment"
        self.ui.statusLog.appendPlainText(message)

    # --- downloading models -----------------------------------------------------------------------
    def onDownload(self) -> None:
        name = self.ui.catalogueSelector.itemData(self.ui.catalogueSelector.currentIndex)
        entry = next((e for e in self.logic.catalogue.entries() if e.name == name), None)
        if entry is None or not self.ensureDependencies():
            return
        unverified = entry.hash_algorithm is None
        if unverified and not slicer.util.confirmOkCancelDisplay(
                f"The source of {entry.name} publishes no hash, so the download cannot be checked against it. Install it anyway? "
                "(Its SHA-256 is recorded.)"):
            return
        with slicer.util.tryWithErrorDisplay("Could not start the download.", waitCursor=True):
            self.followInstall(self.logic.catalogue.start(entry.name, allow_unverified=unverified))

    def followInstall(self, run) -> None:
        """Follows a download or an import (one at a time): bytes on the progress bar, or a busy bar and the importing
        button for an import, whose size is unknown."""
        self._download = run
        self.ui.downloadProgressBar.setRange(0, 100 if run.action == "download" else 0)  # (0, 0): Qt's busy indicator
        self.ui.downloadProgressBar.value = 0
        self.ui.downloadButton.enabled = self.ui.importButton.enabled = False
        if run.action == "import":
            self.ui.importButton.text = "Importing..."
        self._downloadTimer.start()

    def onPollDownload(self) -> None:
        """Timer slot: any error ends the polling here (an exception in a timer slot would repeat every tick)."""
        run = self._download
        try:
            self.logic.catalogue.poll(run)
            while run.messages:
                self.ui.statusLog.appendPlainText(run.messages.pop(0))
            if run.total:
                self.ui.downloadProgressBar.value = int(100 * run.progress)
            status = run.status()
            if status is None:
                return
            self.ui.statusLog.appendPlainText(status)
            if run.action == "import" and run.installed is not None and self._parameterNode:
                self._parameterNode.modelPath = str(run.installed)
        except Exception as error:
            logging.error(str(error))
            self.ui.statusLog.appendPlainText(f"Error while following the {run.action}: {error}")
        self._downloadTimer.stop()
        self._download = None
        self.ui.downloadProgressBar.setRange(0, 100)
        self.ui.importButton.text = "Import..."
        self.ui.importButton.enabled = True
        self.refreshModels()  # the new model in the list (an import's selected), the catalogue entry marked installed

    # --- correct and retrain ----------------------------------------------------------------------
    def trainingSetFolder(self) -> Path:
        """The chosen training-set folder; an emptied path box must not mean Slicer's working directory."""
        folder = self._parameterNode.trainingSet
        if str(folder) in ("", "."):
            raise ValueError("Choose a training-set folder first.")
        return folder

    def showCaseCount(self, folder: Optional[Path] = None) -> None:
        """Cases in ``folder`` (the path box's new text), else in the saved training-set folder."""
        folder = folder or (self._parameterNode.trainingSet if self._parameterNode else None)
        count = self.logic.countCases(folder) if folder is not None and str(folder) not in ("", ".") else 0
        self.ui.caseCountLabel.text = f"{count} case(s) in the training set"

    def onAddToTrainingSet(self) -> None:
        """Saves Input and Output as a case; a segmentation made on another volume (or filed under another study) is
        refused, or added once the user confirms, when it lies on the input's own grid (asked without a wait cursor)."""
        p = self._parameterNode
        confirmable = self.addCase(allowOtherSource=False)
        if confirmable is not None and slicer.util.confirmYesNoDisplay(f"{confirmable}.\n\nAdd it as the case of {p.inputVolume.GetName()!r} anyway?"):
            self.addCase(allowOtherSource=True)

    def addCase(self, allowOtherSource: bool) -> Optional[ValueError]:
        """Writes the case (errors shown); returns the PairingError the user may confirm instead of showing it, else None."""
        from swinssl_slicer.case_pairing import PairingError

        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not add the case to the training set.", waitCursor=True):
            if not p.inputVolume or not p.outputSegmentation:
                raise ValueError("Segment a volume first (or choose its segmentation under Output), then correct it in Segment Editor.")
            try:
                written = self.logic.training.export_scene_cases([(p.inputVolume, p.outputSegmentation)], self.trainingSetFolder(),
                                                                 allow_other_source=allowOtherSource)
            except PairingError as error:  # made on another volume or filed under another study
                if not error.same_grid:
                    raise
                return error
            self.ui.statusLog.appendPlainText(f"Added to the training set: {written[0].name}")
            self.showCaseCount()
        return None

    def onFineTune(self, resume: bool) -> None:
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not start fine-tuning.", waitCursor=True):
            self._tuning = self.logic.training.start_tuning(p.modelPath, self.trainingSetFolder(), p.fineTuneSteps, p.device, resume=resume)
            self.ui.fineTuneProgressBar.value = 0
            self.ui.fineTuneStatusLabel.text = f"{'Resuming' if resume else 'Starting'} fine-tuning into {self._tuning.out.name} ..."
            self._tuningTimer.start()
            self.updateTuningButtons()

    def onStopFineTune(self) -> None:
        if self._tuning is not None:
            self.logic.training.stop(self._tuning)
            self.ui.fineTuneStatusLabel.text = "Stopping after the current step (a checkpoint is written; Resume continues)."

    def onPollTuning(self) -> None:
        """Timer slot: any error ends the polling here (an exception in a timer slot would repeat every tick)."""
        run = self._tuning
        try:
            self.logic.training.poll(run)
            if run.total or run.preparing:
                self.ui.fineTuneProgressBar.value = int(100 * run.step / run.total) if run.total else 0
                dice = ", ".join(f"{name} {value:.2f}" for name, value in run.dice.items())
                self.ui.fineTuneStatusLabel.text = run.progress_text() + (f"; {run.dice_label}: {dice}" if dice else "")
            while run.messages:
                self.ui.statusLog.appendPlainText(run.messages.pop(0))
            status = run.status()  # None until the engine has exited
            if status is None:
                return
            self.ui.fineTuneStatusLabel.text = status
            for line in run.comparison_lines():  # the tuned model against the selected one, per segment, on the same cases
                self.ui.statusLog.appendPlainText(line)
            self.finishTuning()
            self.refreshModels()  # the tuned model appears in the list beside its parent; the selection stays
        except Exception as error:
            logging.error(str(error))
            self.ui.fineTuneStatusLabel.text = f"Error while following the fine-tuning: {error}"
            self.finishTuning()

    def finishTuning(self) -> None:
        self._tuningTimer.stop()
        self._tuning = None
        self.updateTuningButtons()

    def updateTuningButtons(self) -> None:
        running = self._tuning is not None
        self.ui.fineTuneButton.enabled = self.ui.fineTuneResumeButton.enabled = not running
        self.ui.fineTuneStopButton.enabled = running


class SwinSSLSegmentLogic(ScriptedLoadableModuleLogic):
    """Slicer-facing logic; the work is in swinssl_slicer.segment_logic.SegmentationLogic (no Qt). Listing
    models reads model.json files only: opening the module imports neither torch nor MONAI."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._segmentation = None
        self._training = None
        self._catalogue = None

    def getParameterNode(self):
        return SwinSSLSegmentParameterNode(super().getParameterNode())

    def availableModels(self) -> list:
        from swinssl_slicer.training_logic import parents_first

        return parents_first(self.segmentation.available_models())

    def chooseModel(self, saved: str) -> str:
        return self.segmentation.choose_model(saved)

    def channelNames(self, path: str) -> list:
        return self.segmentation.channel_names(path)

    def modelDetails(self, path: str) -> str:
        return self.segmentation.model_details(path)

    @property
    def catalogue(self):
        """The shared catalogue logic (listing reads JSON only; a download runs the engine)."""
        if self._catalogue is None:
            from swinssl_slicer.catalogue_logic import CatalogueLogic

            self._catalogue = CatalogueLogic(temp_root=Path(slicer.app.temporaryPath) / "SwinSSL")
        return self._catalogue

    def showConfidence(self, confidenceNodeID: Optional[str], inputVolumeID: Optional[str], shown: bool) -> None:
        """Confidence map ``confidenceNodeID`` (Inferno, drawn where unsure, with its legend) over the slice views showing
        ``inputVolumeID``, after taking any confidence map off them; with ``shown`` False only the latter."""
        from swinssl_slicer.confidence_display import show_confidence

        show_confidence(slicer.mrmlScene, confidenceNodeID, inputVolumeID, shown)

    def defaultTrainingSet(self) -> Path:
        from swinssl_slicer.training_logic import default_training_set

        return default_training_set()

    def countCases(self, folder: Path) -> int:
        from swinssl_slicer.training_logic import count_cases

        return count_cases(folder)

    @property
    def training(self):
        """The shared training logic: exports corrected cases and runs the fine-tuning (Stop, Resume, progress)."""
        if self._training is None:
            from swinssl_slicer.training_logic import TrainingLogic

            self._training = TrainingLogic(slicer.mrmlScene, temp_root=Path(slicer.app.temporaryPath) / "SwinSSL")
        return self._training

    @property
    def segmentation(self):
        """The shared segmentation logic (listing models needs no engine requirement; segmenting does)."""
        if self._segmentation is None:
            from swinssl_slicer.segment_logic import SegmentationLogic

            self._segmentation = SegmentationLogic(slicer.mrmlScene, temp_root=Path(slicer.app.temporaryPath) / "SwinSSL", bundled=True)
        return self._segmentation

    def close(self) -> None:
        if self._segmentation is not None:
            self._segmentation.close()
            self._segmentation = None


class SwinSSLSegmentTest(ScriptedLoadableModuleTest):
    """In-Slicer test: a tiny random-weight model package segments the demo CT the extension carries
    (real abdominal CT, 30 slices); the result must carry the model's segment names on the CT's grid."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_demo_ct()

    def test_segment_demo_ct(self):
        import tempfile
        import time

        from swinssl_slicer.desktop_install import prepare_self_test

        self.delayDisplay("Installing what the engine needs, if anything is missing")
        prepare_self_test((slicer.app.majorVersion, slicer.app.minorVersion))  # raises rather than pass untested
        from swinssl.labels.table import LabelTable
        from swinssl.network import build_swin_unetr
        from swinssl.package import InputChannel, ModelPackage

        folder = Path(tempfile.mkdtemp(dir=slicer.app.temporaryPath))
        package = ModelPackage("selftest", LabelTable.from_names(["organ a", "organ b"]), [InputChannel()], (6.0, 6.0, 6.0), 64, 12)
        package.save(folder / "selftest", build_swin_unetr(1, 3, 12).state_dict())
        volume = slicer.util.loadVolume(str(engine_root() / "swinssl" / "resources" / "demo_ct.nii.gz"))
        logic = SwinSSLSegmentLogic()
        try:
            run = logic.segmentation.start([volume], folder / "selftest", device="cpu")
            while run.engine.running:
                logic.segmentation.poll(run)
                slicer.app.processEvents()
                time.sleep(0.2)
            node = logic.segmentation.finish(run)
        finally:
            logic.close()
        segmentation = node.GetSegmentation()
        self.assertEqual([segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())], ["organ a", "organ b"])
        labelmap = slicer.util.arrayFromSegmentBinaryLabelmap(node, segmentation.GetNthSegmentID(0), volume)
        self.assertEqual(labelmap.shape, slicer.util.arrayFromVolume(volume).shape)  # (K, J, I) of the CT
        self.assertFalse(run.folder.exists())
        self.delayDisplay("SwinSSLSegment test passed")

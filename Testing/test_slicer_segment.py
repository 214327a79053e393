"""SwinSSLSegment logic on a real MRML scene (slicer-core): real files, a real engine subprocess, real cancel."""

import time
from pathlib import Path

import numpy as np
import slicer
import slicer.util

from test_segmentation import ORGANS, make_package


def wait_until_done(logic, run, timeout=300):
    deadline = time.monotonic() + timeout
    while run.engine.running:
        logic.poll(run)
        assert time.monotonic() < deadline, run.engine.log_tail()
        time.sleep(0.2)


def load_real_ct(scene, shared_data):
    from swinssl_slicer.mrml_io import read_volume

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Study 1")
    volume = read_volume(scene, shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz", "Abdomen CT")
    hierarchy.CreateItem(study, volume)  # as Slicer's DICOM browser would file it
    return volume, study


def test_segment_a_real_volume_end_to_end(mrml_scene, shared_data, tmp_path):
    from swinssl_slicer.segment_logic import SegmentationLogic

    package = make_package(tmp_path / "models" / "tiny", spacing=(6.0, 6.0, 6.0))
    volume, study = load_real_ct(mrml_scene, shared_data)
    logic = SegmentationLogic(mrml_scene, models_folder=tmp_path / "models")
    assert [p.name for p in logic.available_models()] == ["tiny-abdomen"]
    run = logic.start([volume], package.path, device="cpu")
    wait_until_done(logic, run)
    assert run.windows_total > 0 and run.progress == 1.0
    node = logic.finish(run)
    assert not run.folder.exists()
    names = [node.GetSegmentation().GetNthSegment(i).GetName() for i in range(node.GetSegmentation().GetNumberOfSegments())]
    assert names == ["liver", "spleen", "right kidney"] and node.GetName() == "Abdomen CT tiny-abdomen"  # Slicer's name for kidney_right
    colour = node.GetSegmentation().GetNthSegment(0).GetColor()
    assert np.allclose(colour, package.labels.labels[0].color, atol=1e-3)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(ORGANS[0])
    labelmap = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume)
    assert labelmap.shape == slicer.util.arrayFromVolume(volume).shape == (30, 101, 122)  # (K, J, I)
    assert node.GetDisplayNode() is not None and node.GetSegmentation().ContainsRepresentation("Closed surface")
    volumes = {line.split(":")[0] for line in run.plausibility if line.endswith(" mL")}  # the result's check, for the faces
    assert volumes and volumes <= set(names) and run.plausibility[-1].startswith("Confidence not computed")  # named as the segments
    assert set(run.plausibility) <= set(run.messages) and not run.warnings and not run.mismatch  # the real CT fits the CT model
    assert run.doubtful == (volumes != set(names))  # a tiny model's empty organ, not a known miss: never a plain "Done"
    assert run.done_message(len(ORGANS)).startswith("Done with doubts: " if run.doubtful else "Done: ")

    # Issue 25 item 2: a second Segment click, with the first result corrected and still under Output, never reads into
    # it (the storage node's read removes every segment first): a new node named after the input; the first is hidden.
    painted = np.zeros(labelmap.shape, np.uint8)  # (K, J, I)
    painted[10:20, 30:70, 20:60] = 1  # the reader's correction
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted, node, segment_id, volume)
    again = logic.start([volume], package.path, device="cpu")
    wait_until_done(logic, again)
    second = logic.finish(again, node)
    assert second is not node and second.GetName() == "Abdomen CT tiny-abdomen_1"
    assert node.GetName() == "Abdomen CT tiny-abdomen" and not node.GetDisplayVisibility() and second.GetDisplayVisibility()
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume), painted)


def test_cancel_stops_the_process_tree_and_leaves_the_scene_as_it_was(mrml_scene, shared_data, tmp_path):
    from swinssl_slicer.segment_logic import SegmentationLogic

    package = make_package(tmp_path / "model", spacing=(1.5, 1.5, 1.5))  # many windows: still running when cancelled
    volume, _ = load_real_ct(mrml_scene, shared_data)
    nodes_before = mrml_scene.GetNumberOfNodes()
    logic = SegmentationLogic(mrml_scene)
    run = logic.start([volume], package.path, device="cpu")
    deadline = time.monotonic() + 120
    while not any(e["event"] == "progress" for e in run.engine.events):
        logic.poll(run)
        assert run.engine.running and time.monotonic() < deadline, run.engine.log_tail()
        time.sleep(0.1)
    logic.cancel(run)
    assert run.engine.exit_code is not None and not run.engine.running
    assert not run.folder.exists()
    assert mrml_scene.GetNumberOfNodes() == nodes_before


def test_ct_and_pet_picked_as_two_volumes_are_registered_and_segmented(mrml_scene, shared_data, tmp_path):
    """A 2-channel (CT + synthetic PET) model with the two volumes as loaded in Slicer, each on its own grid."""
    import torch

    from pet_phantom import write_ct_pet_case
    from swinssl_slicer.mrml_io import read_volume
    from swinssl_slicer.segment_logic import SegmentationLogic
    from swinssl.labels.table import LabelTable
    from swinssl.network import build_swin_unetr
    from swinssl.package import InputChannel, ModelPackage

    write_ct_pet_case(shared_data, tmp_path / "pair")
    ct = read_volume(mrml_scene, tmp_path / "pair" / "patient1_ct.nii.gz", "CT")
    pet = read_volume(mrml_scene, tmp_path / "pair" / "patient1_pet.nii.gz", "PET")
    torch.manual_seed(0)
    package = ModelPackage("ctpet", LabelTable.from_names(ORGANS), [InputChannel("CT", "ct"), InputChannel("PET", "pet")], (6.0, 6.0, 6.0), 64, 12)
    package.save(tmp_path / "model", build_swin_unetr(2, len(ORGANS) + 1, 12).state_dict())
    logic = SegmentationLogic(mrml_scene)
    run = logic.start([ct, pet], tmp_path / "model", device="cpu")
    wait_until_done(logic, run)
    registered = [e for e in run.engine.events if e["event"] == "progress" and e.get("stage") == "register"]
    assert len(registered) == 1 and registered[0]["channel"] == 1
    assert any("registered to input 1" in message for message in run.messages)
    node = logic.finish(run)
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(ORGANS[0])
    assert slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, ct).shape == slicer.util.arrayFromVolume(ct).shape


def test_a_fresh_scene_gets_the_first_installed_model_and_an_empty_choice_is_refused(mrml_scene, shared_data, tmp_path):
    """Item 5 of issue 10: before, the combo box showed model 1 while the parameter node kept "" and the
    first Segment click ran load_package("")."""
    import pytest

    from swinssl_slicer.segment_logic import SegmentationLogic

    first = make_package(tmp_path / "models" / "a-first")
    logic = SegmentationLogic(mrml_scene, models_folder=tmp_path / "models")
    assert logic.choose_model("") == str(first.path)
    assert logic.choose_model(str(tmp_path / "models" / "removed")) == str(first.path)
    assert logic.channel_names(logic.choose_model("")) == ["CT"] and logic.channel_names("") == []
    volume, _ = load_real_ct(mrml_scene, shared_data)
    with pytest.raises(ValueError, match="choose a model"):
        logic.start([volume], "")
    assert SegmentationLogic(mrml_scene, models_folder=tmp_path / "empty").choose_model("") == ""


def test_a_saved_model_outside_the_models_folder_with_a_broken_model_json_is_named_not_chosen(mrml_scene, tmp_path):
    """A scene saved with a package outside the models folder whose model.json later broke (a list, a null ROI, bad JSON):
    choosing it made the Segment module's model list raise on every enter. It is not chosen (the first listed model is),
    and what is wrong is said, naming the file."""
    import json
    import shutil

    from swinssl.models import BUNDLED_MODELS
    from swinssl_slicer.segment_logic import SegmentationLogic

    demo = BUNDLED_MODELS / "demo_organs"
    outside = shutil.copytree(demo, tmp_path / "elsewhere" / "organs")
    logic = SegmentationLogic(mrml_scene, models_folder=tmp_path / "models", bundled=True)
    try:
        assert logic.choose_model(str(outside)) == str(outside) and logic.model_problem(outside) is None  # readable: kept
        meta = json.loads((demo / "model.json").read_text(encoding="utf-8"))
        for broken, error in (("[1, 2]", "AttributeError"), (json.dumps({**meta, "roi": None}), "TypeError"), ("{", "invalid JSON")):
            (outside / "model.json").write_text(broken)
            assert logic.choose_model(str(outside)) == str(demo)
            problem = logic.model_problem(str(outside))
            assert str(outside / "model.json") in problem and error in problem
    finally:
        logic.close()


def test_closing_the_scene_cancels_the_run_and_nothing_is_loaded(mrml_scene, shared_data, tmp_path):
    """Item 11: the run is cancelled with the scene (no result in a scene without its input), its temporary
    folder is removed, and finish() says what happened. Item 15: inputs are uncompressed NRRD in the
    folder the face gives (Slicer's temporary path)."""
    import pytest

    from swinssl_slicer.segment_logic import SegmentationLogic

    package = make_package(tmp_path / "model", spacing=(1.5, 1.5, 1.5))  # many windows: still running at close
    volume, _ = load_real_ct(mrml_scene, shared_data)
    logic = SegmentationLogic(mrml_scene, temp_root=tmp_path / "slicer-temp")
    run = logic.start([volume], package.path, device="cpu")
    assert run.folder.parent == tmp_path / "slicer-temp"
    header = (run.folder / "input_0.nrrd").read_bytes().split(b"\n\n")[0].decode()
    assert "encoding: raw" in header
    tree = run.engine.alive_processes()
    mrml_scene.Clear(0)  # File > Close Scene: vtkMRMLScene::Clear starts the CloseState (StartCloseEvent)
    assert not run.engine.running and run.engine.outcome == "cancelled"
    assert not any(p.is_running() and p.status() != "zombie" for p in tree)
    assert not run.folder.exists() and logic.active == []
    with pytest.raises(RuntimeError):
        logic.finish(run)
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_listing_nodes_by_class_releases_the_collection(mrml_scene):
    """Item 8: vtkMRMLScene::GetNodesByClass hands its collection to the caller; kept, it holds every node."""
    from swinssl_slicer.mrml_io import nodes_by_class

    nodes = [mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"volume {i}") for i in range(3)]
    before = [node.GetReferenceCount() for node in nodes]
    for _ in range(5):
        assert nodes_by_class(mrml_scene, "vtkMRMLScalarVolumeNode") == nodes
    assert [node.GetReferenceCount() for node in nodes] == before
    leaked = mrml_scene.GetNodesByClass("vtkMRMLScalarVolumeNode")  # the unreleased call, for contrast
    assert [node.GetReferenceCount() for node in nodes] == [count + 1 for count in before]
    leaked.UnRegister(None)


def test_a_transformed_input_gives_a_result_under_the_same_transform(mrml_scene, shared_data, tmp_path):
    """Volumes are written in their local frame; the result must sit under the input's parent transform,
    and inputs under different transforms are refused (they would not line up)."""
    import pytest
    import vtk

    from swinssl_slicer.segment_logic import SegmentationLogic

    package = make_package(tmp_path / "models" / "tiny", spacing=(6.0, 6.0, 6.0))
    volume, _ = load_real_ct(mrml_scene, shared_data)
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 40.0)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    logic = SegmentationLogic(mrml_scene, models_folder=tmp_path / "models")
    assert logic.choose_model(str(tmp_path / "models" / "." / "tiny")) == str(package.path)  # same folder, other spelling
    run = logic.start([volume], package.path, device="cpu")
    wait_until_done(logic, run)
    node = logic.finish(run)
    assert node.GetTransformNodeID() == transform.GetID()
    from swinssl_slicer.mrml_io import same_parent_transform

    other = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "PET")  # e.g. the second input of a CT+PET model
    with pytest.raises(ValueError, match="Abdomen CT, PET are under different transforms"):
        same_parent_transform([volume, other])


def test_correct_and_retrain_adds_the_corrected_case_and_fine_tunes_the_model_with_stop_and_resume(mrml_scene, shared_data, tmp_path, monkeypatch):
    """What the Segment module's "Correct and retrain" does, through the shared logic on a real scene: segment the
    real CT, paint a correction, add it to the training set, fine-tune the model from it, stop, resume; the tuned
    model is a new version installed beside the model (weights only; the checkpoint stays in the run folder), keeps
    the model's input settings and classes, is compared with it, and is listed after it."""
    from swinssl.models import list_packages
    from swinssl.package import load_package
    from swinssl_slicer.segment_logic import SegmentationLogic
    from swinssl_slicer.training_logic import TrainingLogic, count_cases, parents_first, tuning_plan

    monkeypatch.setenv("SWINSSL_MODELS", str(tmp_path / "models"))
    package = make_package(tmp_path / "models" / "tiny", spacing=(6.0, 6.0, 6.0))
    volume, _ = load_real_ct(mrml_scene, shared_data)
    segmenting = SegmentationLogic(mrml_scene)
    run = segmenting.start([volume], package.path, device="cpu")
    wait_until_done(segmenting, run)
    node = segmenting.finish(run)
    liver_id = node.GetSegmentation().GetSegmentIdBySegmentName("liver")
    painted = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)  # (K, J, I)
    painted[10:20, 30:70, 20:60] = 1  # the reader's correction
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted, node, liver_id, volume)

    training = TrainingLogic(mrml_scene)
    cases = tmp_path / "training-set"
    written = training.export_scene_cases([(volume, node)], cases)
    assert count_cases(cases) == 1 and written[0].name == "Abdomen_CT.seg.nrrd"
    plan = tuning_plan(package.path, training.taken_names())
    assert plan.name == "tiny-abdomen-tuned-1" and plan.classes == ORGANS and plan.init == str(package.path)
    assert tuning_plan(package.path, ["tiny-abdomen-tuned-1", "tiny-abdomen-tuned-3", "other-tuned-9"]).name == "tiny-abdomen-tuned-4"

    first = training.start_tuning(package.path, cases, steps=2, device="cpu", extra=["--stop-at", "1"])
    wait_until_done(training, first, timeout=400)
    assert first.engine.outcome == "stopped" and first.step == 1 and "Resume continues" in first.status()
    second = training.start_tuning(package.path, cases, steps=2, device="cpu", resume=True)
    wait_until_done(training, second, timeout=400)
    assert second.engine.outcome == "done" and second.step == 2, second.engine.log_tail()
    installed = tmp_path / "models" / "tiny-abdomen-tuned-1"
    assert sorted(path.name for path in installed.iterdir()) == ["model.json", "model.safetensors"]
    assert (tmp_path / "runs" / "tiny-abdomen-tuned-1" / "training" / "checkpoint.pt").is_file()  # kept for a later resume
    tuned = load_package(installed)
    assert tuned.labels.names == ["liver", "spleen", "right kidney"] and tuned.training["case_names"] == ["Abdomen_CT"]  # the case's (Slicer's) names
    assert tuned.spacing == package.spacing and tuned.roi == package.roi and tuned.channels[0].window == (-1000.0, 1000.0)
    assert second.comparison["parent"] == "tiny-abdomen" and second.comparison["validated_on"].startswith("training cases")
    assert "training-case Dice" in second.status() and ("WORSE" in second.status()) == second.comparison["worse"]
    assert [p.name for p in parents_first(list_packages())] == ["tiny-abdomen", "tiny-abdomen-tuned-1"]
    assert load_package(package.path).metrics == package.metrics  # the parent is untouched


def slice_rgba(connection) -> np.ndarray:
    """What a slice view layer (or the blend of its layers) draws, as a (rows, columns, RGBA) uint8 array: Slicer's
    own reslice, colour mapping, display threshold and layer blending."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    producer = connection.GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(connection.GetIndex())
    columns, rows, _ = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1)


def test_the_time_left_counts_down_through_a_validation():
    """The engine's ETA includes the validations to come; while one runs (no step events) the face counts down."""
    from swinssl_slicer.training_logic import TrainingRun

    run = TrainingRun("finetune", None, Path("run"), step=1, total=2, eta_s=100.0, eta_at=time.monotonic() - 40,
                      validation="validating case 1 of 1: window 2 of 9")
    assert run.progress_text() == "step 1 of 2, about 60 s left, validating case 1 of 1: window 2 of 9"


def test_the_confidence_map_is_drawn_in_inferno_where_unsure_with_a_legend_and_taken_off_on_request(mrml_scene, shared_data, tmp_path):
    """The map loads beside the segmentation with Slicer's Inferno colour table (node ID as Slicer names it), a 0..1
    window, Slicer's display threshold at the engine's 'unsure' (0.6: transparent where the model is sure) and a
    colour legend; shown over its CT it colours only unsure voxels, leaves the CT untouched elsewhere, and goes
    from the views (legend with it) when turned off."""
    from swinssl_slicer.confidence_display import CONFIDENCE_ATTRIBUTE, OVERLAY_OPACITY, show_confidence
    from swinssl_slicer.segment_logic import SegmentationLogic

    package = make_package(tmp_path / "models" / "tiny", spacing=(6.0, 6.0, 6.0))
    volume, study = load_real_ct(mrml_scene, shared_data)
    logic = SegmentationLogic(mrml_scene, models_folder=tmp_path / "models")
    run = logic.start([volume], package.path, device="cpu", confidence=True)
    wait_until_done(logic, run)
    logic.finish(run)
    confidence = mrml_scene.GetNodeByID(run.confidence_node_id)
    assert confidence.GetAttribute(CONFIDENCE_ATTRIBUTE) == "1" and confidence.GetName() == "Abdomen CT tiny-abdomen confidence"
    values = slicer.util.arrayFromVolume(confidence)
    assert values.shape == slicer.util.arrayFromVolume(volume).shape and 0.0 <= values.min() and values.max() <= 1.0
    assert (values < 0.6).any() and (values >= 0.6).any()  # both kinds of voxel are on screen below
    assert np.allclose(confidence.GetSpacing(), volume.GetSpacing()) and np.allclose(confidence.GetOrigin(), volume.GetOrigin(), atol=1e-3)
    assert set(run.confidence) <= set(ORGANS) and run.confidence and any("mean confidence" in m for m in run.messages)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(confidence)) == study

    display = confidence.GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLColorTableNodeFileInferno.txt"  # Slicer's Inferno.txt node
    inferno = display.GetColorNode().GetLookupTable()
    assert inferno.GetNumberOfTableValues() == 256
    assert np.allclose(inferno.GetTableValue(0)[:3], (0.0015, 0.0005, 0.0139), atol=2e-3)  # Inferno's black-purple end
    assert np.allclose(inferno.GetTableValue(255)[:3], (0.9884, 0.9984, 0.6449), atol=2e-3)  # and its pale yellow end
    assert (display.GetWindow(), display.GetLevel(), display.GetAutoWindowLevel()) == (1.0, 0.5, 0)
    assert display.GetApplyThreshold() and (display.GetLowerThreshold(), display.GetUpperThreshold()) == (0.0, 0.6)
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(confidence)
    assert legend is not None and legend.GetVisibility() and legend.GetTitleText() == "Confidence"
    assert legend.GetPrimaryDisplayNode() is display and not legend.GetUseColorNamesForLabels()

    slice_logic = slicer.vtkMRMLSliceLogic()
    slice_logic.SetMRMLScene(mrml_scene)
    slice_node = slice_logic.AddSliceNode("Red")
    slice_node.SetDimensions(122, 101, 1)
    slice_logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
    slice_logic.FitSliceToBackground()
    slice_logic.SetSliceOffset(slice_logic.GetSliceOffset() + 6)  # an axial slice 6 mm off the centre
    other = mrml_scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    other.SetBackgroundVolumeID(confidence.GetID())
    ct_only = slice_rgba(slice_logic.GetImageDataConnection())

    showing = show_confidence(mrml_scene, confidence.GetID(), volume.GetID())
    composite = slice_logic.GetSliceCompositeNode()
    assert showing == [composite] and composite.GetForegroundVolumeID() == confidence.GetID()
    assert abs(composite.GetForegroundOpacity() - OVERLAY_OPACITY) < 1e-6
    assert other.GetForegroundVolumeID() is None  # views showing something else are left alone
    overlay, blended = (slice_rgba(connection) for connection in (slice_logic.GetForegroundLayer().GetImageDataConnection(),
                                                                  slice_logic.GetImageDataConnection()))
    drawn = overlay[..., 3] == 255
    assert drawn.any() and (~drawn).any() and set(np.unique(overlay[..., 3])) == {0, 255}
    rgb = overlay[drawn][:, :3].astype(int)
    assert (rgb.max(axis=1) - rgb.min(axis=1) > 40).all()  # Inferno below 0.6: purple to orange, never grey
    assert np.array_equal(blended[~drawn], ct_only[~drawn])  # where the model is sure the CT is untouched
    assert not np.array_equal(blended[drawn], ct_only[drawn])

    assert show_confidence(mrml_scene, confidence.GetID(), volume.GetID(), shown=False) == []
    assert composite.GetForegroundVolumeID() is None and mrml_scene.GetNodeByID(confidence.GetID()) is confidence
    assert np.array_equal(slice_rgba(slice_logic.GetImageDataConnection()), ct_only)
    assert show_confidence(mrml_scene, volume.GetID(), volume.GetID()) == []  # an ID that names no confidence map shows nothing


def test_a_catalogue_model_downloads_with_progress_and_is_listed(mrml_scene, tmp_path):
    """The faces' Download button: the shared logic runs `swinssl models download` against a local HTTP server."""
    import json

    from test_model_download import BUNDLE_ZIP, FileServer, bundle_entry, bundle_zip
    from swinssl_slicer.catalogue_logic import CatalogueLogic
    from swinssl_slicer.segment_logic import SegmentationLogic

    server = FileServer()
    try:
        data = bundle_zip(tmp_path)
        server.files["/zoo/" + BUNDLE_ZIP] = data
        catalogue = tmp_path / "catalogue.json"
        catalogue.write_text(json.dumps([bundle_entry(server.url("/zoo/" + BUNDLE_ZIP), data),
                                         bundle_entry(server.url("/zoo/" + BUNDLE_ZIP), data, name="tampered", hash=None, sha256="1" * 64)]))
        downloads = CatalogueLogic(models_folder=tmp_path / "models", catalogue=catalogue)
        entry = downloads.entries()[0]
        assert not downloads.is_installed(entry) and "SHA1 checked" in downloads.describe(entry)
        run = downloads.start("tiny-btcv")
        wait_until_done(downloads, run)
        downloads.poll(run)
        assert run.engine.outcome == "done" and run.received == run.total == len(data) and run.progress == 1.0
        assert run.status() == f"Installed tiny-btcv in {tmp_path / 'models' / 'tiny-btcv'}" and downloads.is_installed(entry)
        assert [p.name for p in SegmentationLogic(mrml_scene, models_folder=tmp_path / "models").available_models()] == ["tiny-btcv"]
        refused = downloads.start("tampered")
        wait_until_done(downloads, refused)
        downloads.poll(refused)
        assert refused.engine.outcome == "error" and "not the published file" in refused.status()
        assert not (tmp_path / "models" / "tampered").exists() and not refused.folder.exists()
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_an_mr_volume_into_the_ct_demo_model_is_refused_with_the_volume_named(mrml_scene, shared_data):
    """Issue 22: the real brain MR in the scene, the bundled abdominal CT model: the engine refuses before any window
    runs; the face learns it is a mismatch it may override (start(..., allow_mismatch=True)), named by the volume,
    not by the temporary file; the model's training is there to show beside the model choice."""
    from pathlib import Path

    import pytest

    from swinssl_slicer.mrml_io import read_volume
    from swinssl_slicer.segment_logic import SegmentationLogic

    demo = Path(__file__).resolve().parents[1] / "swinssl" / "resources" / "demo_organs"
    mr = read_volume(mrml_scene, shared_data / "mr" / "brain_t1c_brain1.nrrd", "Brain MR")
    logic = SegmentationLogic(mrml_scene)
    assert logic.model_details(demo).startswith("Trained on abdomen CT (3 mm voxels)") and "left kidney" in logic.model_details(demo)
    run = logic.start([mr], demo, device="cpu")
    wait_until_done(logic, run, timeout=120)
    assert run.mismatch and run.windows_total == 0
    assert run.error.startswith("Brain MR: looks like MR, not CT") and "trained on abdomen CT" in run.error
    assert str(run.folder) not in run.error
    with pytest.raises(RuntimeError, match="^Brain MR: looks like MR"):
        logic.finish(run)
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0 and not run.folder.exists()
    overriding = logic.start([mr], demo, device="cpu", allow_mismatch=True)
    assert "--allow-mismatch" in overriding.engine.process.args
    logic.cancel(overriding)


def file_under_study(scene, node, study: int) -> None:
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(node)
    hierarchy.SetItemParent(item, study) if item else hierarchy.CreateItem(study, node)


def test_add_to_training_set_refuses_a_segmentation_made_on_another_volume_or_study(mrml_scene, shared_data, tmp_path):
    """Issue 25 item 1: segment patient A, switch the input to patient B, Add: A's labels were saved as B's case (on
    B's grid: an empty liver). Both faces add cases through export_scene_cases; nothing is written for a wrong pair.
    A segmentation on the volume's own grid (the same series loaded twice) may be added once the user confirms."""
    import pytest
    import SimpleITK as sitk

    from test_slicer_pretrain import painted_scene
    from swinssl_slicer.case_pairing import PairingError
    from swinssl_slicer.mrml_io import read_volume
    from swinssl_slicer.training_logic import TrainingLogic, count_cases

    patient_a, segmentation = painted_scene(mrml_scene, shared_data)  # 'Organs' painted on 'Abdomen CT'
    patient_b = read_volume(mrml_scene, shared_data / "mr" / "abdomen_mr_small_3mm.nii.gz", "Patient B MR")
    training, cases = TrainingLogic(mrml_scene), tmp_path / "training-set"
    with pytest.raises(PairingError, match="'Organs' was made on 'Abdomen CT', not on 'Patient B MR' .on another grid") as refused:
        training.export_scene_cases([(patient_b, segmentation)], cases)
    assert not refused.value.same_grid and not cases.exists()
    with pytest.raises(PairingError, match="not on 'Patient B MR' .on another grid"):
        training.export_scene_cases([(patient_b, segmentation)], cases, allow_other_source=True)  # no confirming another grid

    same_series = read_volume(mrml_scene, shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz", "Abdomen CT again")
    with pytest.raises(PairingError, match="not on 'Abdomen CT again' .it lies on the same grid") as asked:
        training.export_scene_cases([(same_series, segmentation)], cases)
    assert asked.value.same_grid and not cases.exists()
    written = training.export_scene_cases([(same_series, segmentation)], cases, allow_other_source=True)
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(written[0])))
    assert liver.any() and count_cases(cases) == 1

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient A")
    first, second = hierarchy.CreateStudyItem(patient, "CT 2024"), hierarchy.CreateStudyItem(patient, "CT 2025")
    file_under_study(mrml_scene, patient_a, first)
    file_under_study(mrml_scene, segmentation, second)
    with pytest.raises(PairingError, match="'Organs' is in study 'CT 2025', 'Abdomen CT' in study 'CT 2024': they are not one case"):
        training.export_scene_cases([(patient_a, segmentation)], cases)
    file_under_study(mrml_scene, segmentation, first)
    assert training.export_scene_cases([(patient_a, segmentation)], cases)[0].name == "Abdomen_CT.seg.nrrd" and count_cases(cases) == 2


def test_cancel_returns_within_its_bound_when_a_process_outlives_its_kill(mrml_scene, tmp_path, monkeypatch):
    """Issue 25 item 11: Cancel runs on Slicer's GUI thread and ended with an unbounded wait() on the engine. A process
    stuck in a driver call (a hung GPU) outlives SIGTERM and SIGKILL; here terminate and kill reach no process.
    Cancel must come back within its bound, say which process is left, and free the run's temporary folder."""
    import subprocess
    import sys
    import threading

    import psutil

    from swinssl.runner import EngineProcess
    from swinssl_slicer.segment_logic import SegmentationLogic, SegmentRun

    folder = tmp_path / "run"
    folder.mkdir()
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        engine = EngineProcess(process, folder / "events.jsonl", folder / "events.log", None)
        logic = SegmentationLogic(mrml_scene)
        run = SegmentRun(engine, folder, folder / "result.seg.nrrd", [], "result")
        logic.active.append(run)
        monkeypatch.setattr(psutil.Process, "terminate", lambda self: None)
        monkeypatch.setattr(psutil.Process, "kill", lambda self: None)
        started = time.monotonic()
        cancelling = threading.Thread(target=logic.cancel, args=(run,), daemon=True)
        cancelling.start()
        cancelling.join(timeout=15)
        assert not cancelling.is_alive(), "Cancel is still waiting for the engine"
        assert time.monotonic() - started < 8  # 2 x the 3 s grace, and some slack for a loaded machine
        assert engine.running and engine.cancelled and str(process.pid) in run.error
        assert not folder.exists() and logic.active == []
    finally:
        process.kill()
        process.wait()

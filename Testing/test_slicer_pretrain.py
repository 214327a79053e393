"""SwinSSLPretrain logic on a real MRML scene: streamed losses and previews, scene export, .mrb round trip."""

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util


def wait(logic, run, timeout=400) -> list[dict]:
    """Polls until the engine ends; returns every event read."""
    deadline = time.monotonic() + timeout
    events = []
    while run.engine.running:
        events += logic.poll(run)
        assert time.monotonic() < deadline, run.engine.log_tail()
        time.sleep(0.2)
    events += logic.poll(run)
    assert run.engine.exit_code == 0, run.engine.log_tail()
    return events


def test_pretraining_streams_losses_into_a_table_and_previews_into_three_reused_volumes(mrml_scene, shared_data, tmp_path):
    from swinssl_slicer.training_logic import TrainingLogic

    logic = TrainingLogic(mrml_scene)
    run = logic.start_pretraining([str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz")], tmp_path / "run", roi=32, feature_size=12,
                                  steps=4, batch_size=2, preview_every=2, device="cpu",
                                  extra=["--projection-dim", "16", "--cache-dir", str(tmp_path / "cache")])
    events = wait(logic, run)
    cache = [e for e in events if e["event"] == "cache"]
    assert cache and cache[-1]["done"] == cache[-1]["total"] == 1 and cache[-1]["built"] == 1
    assert [e["event"] for e in events].index("cache") < [e["event"] for e in events].index("start")  # the volumes come first
    table = mrml_scene.GetNodeByID(run.table_node_id).GetTable()
    assert table.GetNumberOfRows() == 4
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == ["step", "total", "rotation", "contrast", "inpaint"]
    assert [table.GetValue(r, 0).ToDouble() for r in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert all(np.isfinite(table.GetValue(r, 1).ToDouble()) for r in range(4))
    chart = mrml_scene.GetNodeByID(run.chart_node_id)
    assert chart.GetNumberOfPlotSeriesNodes() == 4
    series = chart.GetNthPlotSeriesNode(0)  # scatter: a line plot would ignore the x column and plot by row index
    assert series.GetPlotType() == series.PlotTypeScatter and series.GetXColumnName() == "step" and series.IsXColumnRequired()
    previews = [n for n in mrml_scene.GetNodesByClass("vtkMRMLScalarVolumeNode") if n.GetAttribute("SwinSSL.Preview")]
    assert sorted(n.GetAttribute("SwinSSL.Preview") for n in previews) == ["masked", "original", "reconstruction"]  # two previews, three nodes
    assert run.preview_step == 4 and all(n.GetAttribute("SwinSSL.PreviewStep") == "4" for n in previews)
    original = next(n for n in previews if n.GetAttribute("SwinSSL.Preview") == "original")
    on_disk = sitk.ReadImage(str(tmp_path / "run" / "previews" / "step_000004_original.nrrd"))
    ras_origin = np.array(on_disk.GetOrigin()) * np.array([-1, -1, 1])
    assert np.allclose(original.GetOrigin(), ras_origin, atol=1e-3) and np.allclose(original.GetSpacing(), on_disk.GetSpacing())
    assert slicer.util.arrayFromVolume(original).shape == (32, 32, 32)


def painted_scene(scene, shared_data):
    """The real small abdomen CT with a 'Liver' segment painted from its (pseudo-)label map."""
    from swinssl_slicer.mrml_io import read_volume

    volume = read_volume(scene, shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz", "Abdomen CT")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_small_3mm_labels.nii.gz")))  # (K, J, I)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Organs")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for name, value in (("Liver", 5), ("Spleen", 1)):
        segment_id = segmentation.GetSegmentation().AddEmptySegment(name, name)
        slicer.util.updateSegmentBinaryLabelmapFromArray((labels == value).astype(np.uint8), segmentation, segment_id, volume)
    return volume, segmentation


def test_export_a_painted_scene_and_fine_tune_from_it(mrml_scene, shared_data, tmp_path):
    from swinssl_slicer.training_logic import TrainingLogic
    from swinssl.package import load_package

    volume, segmentation = painted_scene(mrml_scene, shared_data)
    logic = TrainingLogic(mrml_scene)
    written = logic.export_scene_cases([(volume, segmentation)], tmp_path / "export")
    assert [p.name for p in written] == ["Abdomen_CT.seg.nrrd"] and (tmp_path / "export" / "Abdomen_CT.nrrd").is_file()
    exported = sitk.ReadImage(str(tmp_path / "export" / "Abdomen_CT.nrrd"))
    source = sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"))
    assert np.allclose(exported.GetOrigin(), source.GetOrigin(), atol=1e-3) and exported.GetSize() == source.GetSize()
    first = written[0].read_bytes()
    again = logic.export_scene_cases([(volume, segmentation)], tmp_path / "export")  # a second case of the same name
    assert [p.name for p in again] == ["Abdomen_CT_1.seg.nrrd"] and (tmp_path / "export" / "Abdomen_CT_1.nrrd").is_file()
    assert written[0].read_bytes() == first  # the earlier case is kept as it was
    run = logic.start_finetuning(tmp_path / "models" / "organs", scenes=[str(tmp_path / "export")], classes=["liver", "spleen"], roi=64,
                                 feature_size=12, steps=2, device="cpu", extra=["--spacing", "6", "6", "6", "--val-every", "2"])
    wait(logic, run)
    package = load_package(tmp_path / "models" / "organs")
    assert package.labels.names == ["Liver", "Spleen"]
    assert run.dice and set(run.dice) <= {"Liver", "Spleen"}
    assert run.validated_on.startswith("training cases") and run.dice_label == "training-case Dice"  # 2 cases: none held out
    table = mrml_scene.GetNodeByID(run.table_node_id).GetTable()
    assert table.GetNumberOfRows() == 2 and table.GetColumnName(2) == "val_mean_dice"
    assert run.validation is None and run.progress_text().startswith("step 2 of 2")  # the validation's news ended with it


def test_progress_text_gives_step_time_left_and_validation():
    from swinssl_slicer.training_logic import TrainingRun

    run = TrainingRun("finetune", engine=None, out=Path("model"), step=3, total=10, eta_s=45.0)
    assert run.progress_text() == "step 3 of 10, about 45 s left"
    run.eta_s, run.validation = 300.0, "validating case 1 of 2: window 5 of 12"
    assert run.progress_text() == "step 3 of 10, about 5 min left, validating case 1 of 2: window 5 of 12"
    before = TrainingRun("pretrain", engine=None, out=Path("run"), eta_s=150.0, preparing="preparing volumes: 12 of 64")
    assert before.progress_text() == "preparing volumes: 12 of 64, about 2 min left"


def test_an_mrb_written_by_slicer_core_is_read_back_for_training(mrml_scene, shared_data, tmp_path):
    from swinssl.finetune.cases import cases_from_scene
    from swinssl.finetune.dataset import build_label_table, prepare_case, read_case_labels
    from swinssl.preprocessing.intensity import IntensitySettings

    volume, segmentation = painted_scene(mrml_scene, shared_data)
    for node in (volume, segmentation):
        node.AddDefaultStorageNode()
    assert mrml_scene.WriteToMRB(str(tmp_path / "organs.mrb"))
    cases = cases_from_scene(tmp_path / "organs.mrb", tmp_path)
    assert len(cases) == 1
    labels = read_case_labels(cases[0])
    assert sorted(labels.names.values()) == ["Liver", "Spleen"]
    table = build_label_table([labels], ["liver"])
    case = prepare_case(cases[0], labels, table, IntensitySettings(), (3.0, 3.0, 3.0), 64)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_small_3mm_labels.nii.gz"))) == 5
    assert abs(int((case.label == 1).sum()) - int(expected.sum())) <= 0.01 * expected.sum()


def test_stop_then_resume_continues_one_table_and_shows_the_plot_again_after_a_scene_close(mrml_scene, shared_data, tmp_path):
    """Stop through the stop-request file gives "Stopped" (from the engine's own event); Resume asks the
    face to show the plot again (item 9) and continues the same table; a scene closed during the run gets
    a fresh table and previews instead of errors (item 11)."""
    from swinssl_slicer.training_logic import TrainingLogic

    logic = TrainingLogic(mrml_scene)
    tiny = ["--projection-dim", "16", "--cache-dir", str(tmp_path / "cache")]
    run = logic.start_pretraining([str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz")], tmp_path / "run", roi=32, feature_size=12,
                                  steps=8, batch_size=2, preview_every=2, device="cpu", extra=tiny)
    deadline = time.monotonic() + 300
    while run.step < 1:
        logic.poll(run)
        assert run.engine.running and time.monotonic() < deadline, run.engine.log_tail()
        time.sleep(0.1)
    assert run.show_plot
    run.show_plot = False  # as the face does once it has shown the chart
    mrml_scene.Clear(0)  # the scene goes; the training goes on
    shown_at = run.step
    while run.step == shown_at:
        logic.poll(run)
        assert run.engine.running and time.monotonic() < deadline, run.engine.log_tail()
        time.sleep(0.1)
    assert run.show_plot  # the chart came back in the cleared scene and is shown again
    logic.stop(run)
    while run.status() is None:
        logic.poll(run)
        time.sleep(0.2)
    assert run.engine.outcome == "stopped" and run.status().startswith(f"Stopped at step {run.step} of 8")
    assert run.engine.process.returncode == 3 and run.step < 8
    stopped_at, table_id = run.step, run.table_node_id
    assert mrml_scene.GetNodeByID(table_id) is not None  # recreated in the cleared scene

    resumed = logic.start_pretraining([], tmp_path / "run", steps=8, resume=True)
    wait(logic, resumed)
    assert resumed.show_plot and resumed.table_node_id == table_id and resumed.status() == f"Finished: {tmp_path / 'run'}"
    table = mrml_scene.GetNodeByID(table_id).GetTable()
    steps = [table.GetValue(row, 0).ToDouble() for row in range(table.GetNumberOfRows())]
    assert steps == sorted(set(steps)) and steps[-1] == 8.0 and set(range(stopped_at + 1, 9)) <= set(steps)
    assert sorted(logic.preview_nodes()) == ["masked", "original", "reconstruction"]


def test_exporting_keeps_the_users_segmentation_geometry_and_checks_initial_weights(mrml_scene, shared_data, tmp_path):
    """Export writes the labelmap on the volume's grid without changing the grid the user edits on; a
    missing initial-weights folder is refused before anything starts; the loss plot uses the step column."""
    import pytest

    from swinssl_slicer.training_logic import TrainingLogic

    volume, segmentation = painted_scene(mrml_scene, shared_data)
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    segmentation.GetSegmentation().SetConversionParameter(name, "1;0;0;0;0;1;0;0;0;0;1;0;0;9;0;9;0;9;")  # the user's own grid
    segmentation.SetNodeReferenceID(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole(), None)
    logic = TrainingLogic(mrml_scene)
    written = logic.export_scene_cases([(volume, segmentation)], tmp_path / "export")
    assert sitk.ReadImage(str(written[0])).GetSize() == sitk.ReadImage(str(tmp_path / "export" / "Abdomen_CT.nrrd")).GetSize()
    assert segmentation.GetSegmentation().GetConversionParameter(name) == "1;0;0;0;0;1;0;0;0;0;1;0;0;9;0;9;0;9;"
    assert segmentation.GetNodeReferenceID(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is None
    with pytest.raises(ValueError, match="initial weights not found"):
        logic.start_finetuning_from_scene("m", [(volume, segmentation)], [], init=tmp_path / "no-such-run")
    with pytest.raises(ValueError, match="initial weights not found"):
        logic.start_finetuning_from_scene("m", [(volume, segmentation)], [], init=Path("."))


def test_starting_over_an_existing_run_fails_without_overwrite_and_replaces_it_with(mrml_scene, shared_data, tmp_path):
    """The face asks before replacing a run (holds_run), then passes --overwrite; the run's events live in
    the temporary folder, so setting the old run aside does not take them along."""
    from swinssl_slicer.training_logic import TrainingLogic

    logic = TrainingLogic(mrml_scene, temp_root=tmp_path / "slicer-temp")
    arguments = dict(roi=32, feature_size=12, steps=1, batch_size=2, preview_every=0, device="cpu",
                     extra=["--projection-dim", "16", "--cache-dir", str(tmp_path / "cache")])
    data = [str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz")]
    assert not logic.holds_run(tmp_path / "run", "pretrain")
    wait(logic, logic.start_pretraining(data, tmp_path / "run", **arguments))
    assert logic.holds_run(tmp_path / "run", "pretrain")
    refused = logic.start_pretraining(data, tmp_path / "run", **arguments)
    refused.engine.wait(timeout=120)
    logic.poll(refused)
    assert refused.status().startswith("Failed") and "--overwrite" in refused.status()
    replaced = logic.start_pretraining(data, tmp_path / "run", **arguments, overwrite=True)
    assert replaced.engine.events_path.parent.parent == tmp_path / "slicer-temp"
    wait(logic, replaced)
    assert replaced.status().startswith("Finished") and not (tmp_path / "run" / ".previous-run").exists()
    assert list((tmp_path / "slicer-temp").iterdir()) == []  # each ended run's event log is gone


def test_a_run_folder_held_by_a_live_run_is_refused_before_anything_starts(mrml_scene, shared_data, tmp_path, monkeypatch):
    """Issue 25 item 4: another live run (here this process, through the engine's own lock) writes into the folder:
    the faces' logic refuses at once, naming that run; no engine starts, no case is exported, nothing is set aside."""
    import os

    import pytest

    from swinssl.training.run_folder import RunFolderLock
    from swinssl_slicer.training_logic import TrainingLogic

    monkeypatch.setenv("SWINSSL_MODELS", str(tmp_path / "models"))
    logic = TrainingLogic(mrml_scene, temp_root=tmp_path / "slicer-temp")
    volume, segmentation = painted_scene(mrml_scene, shared_data)
    with RunFolderLock(tmp_path / "run", "pretrain"), RunFolderLock(logic.runs_folder() / "organs", "finetune"):
        with pytest.raises(ValueError, match=rf"run is in use by swinssl pretrain \(pid {os.getpid()}, started .*\): wait for that run"):
            logic.start_pretraining([str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz")], tmp_path / "run", overwrite=True)
        with pytest.raises(ValueError, match="run is in use by swinssl pretrain"):
            logic.start_pretraining([], tmp_path / "run", resume=True)
        with pytest.raises(ValueError, match=r"organs is in use by swinssl finetune"):
            logic.start_finetuning_from_scene("organs", [(volume, segmentation)], [])
        assert not (tmp_path / "slicer-temp").exists() or list((tmp_path / "slicer-temp").iterdir()) == []
        assert sorted(path.name for path in (tmp_path / "run").iterdir()) == [".swinssl-lock"]
    logic.refuse_if_busy(tmp_path / "run")  # free again once the owner has ended

"""What the Slicer modules do on Slicer's GUI thread stays short (issue 25, items 8-10), on a real MRML scene
(slicer-core) with real engine subprocesses: Import... runs the engine, not torch in Slicer's process; 3-D surfaces
are built only when asked, off by default for large volumes; the loss table is updated once per poll and bounded."""

import json
import subprocess
import sys
from pathlib import Path

import vtk

from conftest import REPO


def progress_event(step: int) -> dict:
    losses = {"rotation": 1.0 / step, "contrast": 2.0 / step, "inpaint": 3.0 / step, "total": 6.0 / step}
    return {"event": "progress", "step": step, "total": 100000, "eta_s": 1.0, "losses": losses}


def ended_engine(events_path: Path):
    """An EngineProcess over a real (finished) subprocess, whose event file the test writes."""
    from swinssl.runner import EngineProcess

    events_path.write_text("")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return EngineProcess(process, events_path, events_path.with_suffix(".log"), None)


def test_loss_table_is_updated_once_per_poll_and_stays_bounded(mrml_scene, tmp_path, monkeypatch):
    """Item 10: each poll's steps reach the table in one update (one plot re-render, not one per step) found by the IDs
    the run keeps (no scene scan), and a long run keeps at most MAX_LOSS_ROWS rows, from its first step to its latest;
    a resumed run replaces the steps after its checkpoint."""
    from swinssl_slicer import loss_table
    from swinssl_slicer.loss_table import MAX_LOSS_ROWS
    from swinssl_slicer.training_logic import TrainingLogic, TrainingRun

    events = tmp_path / "events.jsonl"
    logic = TrainingLogic(mrml_scene)
    run = TrainingRun("pretrain", ended_engine(events), tmp_path / "run")

    def write(steps):
        with events.open("a") as stream:
            stream.writelines(json.dumps(progress_event(step)) + "\n" for step in steps)

    write(range(1, 11))
    logic.poll(run)
    table_node = mrml_scene.GetNodeByID(run.table_node_id)
    assert table_node.GetTable().GetNumberOfRows() == 10 and run.show_plot
    modified, scans = [], []
    table_node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: modified.append(event))
    monkeypatch.setattr(loss_table, "nodes_by_class", lambda scene, name: scans.append(name) or [])
    write(range(11, 3 * MAX_LOSS_ROWS + 1))
    logic.poll(run)
    assert len(modified) == 1 and scans == []  # one update for the 5990 steps this poll read, no scene scan
    table = table_node.GetTable()
    steps = [table.GetValue(row, 0).ToDouble() for row in range(table.GetNumberOfRows())]
    assert MAX_LOSS_ROWS // 2 <= len(steps) <= MAX_LOSS_ROWS
    assert steps[0] == 1 and steps[-1] == 3 * MAX_LOSS_ROWS and steps == sorted(set(steps))
    last_total = table.GetValueByName(len(steps) - 1, "total").ToDouble()
    assert abs(last_total - 6.0 / (3 * MAX_LOSS_ROWS)) < 1e-6
    write(range(2000, 2011))  # Resume from a checkpoint at step 1999
    logic.poll(run)
    steps = [table.GetValue(row, 0).ToDouble() for row in range(table.GetNumberOfRows())]
    assert steps[-11:] == [float(s) for s in range(2000, 2011)] and all(s < 2000 for s in steps[:-11])
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1 and mrml_scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 1


def finished_segment_run(scene, ct, labels, folder: Path, names: dict):
    """A SegmentRun whose (real, ended) engine reported ``done`` and whose result file holds the real CT's reference
    organs (TotalSegmentator pseudo-labels ``names``: value -> name) as a .seg.nrrd on the CT's grid."""
    import slicer.util

    from swinssl_slicer.mrml_io import write_segmentation
    from swinssl_slicer.segment_logic import SegmentRun

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reference")
    node.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    array = slicer.util.arrayFromVolume(labels)  # (K, J, I)
    for value, name in names.items():
        segment_id = node.GetSegmentation().AddEmptySegment("", name)
        slicer.util.updateSegmentBinaryLabelmapFromArray((array == value).astype("uint8"), node, segment_id, ct)
    output = write_segmentation(node, folder / "result.seg.nrrd", ct)
    scene.RemoveNode(node)
    engine = ended_engine(folder / "events.jsonl")
    (folder / "events.jsonl").write_text(json.dumps({"event": "done", "outputs": {"segmentation": str(output)}}) + "\n")
    return SegmentRun(engine, folder, output, [ct.GetID()], "Abdomen CT result")


def test_show_3d_builds_surfaces_only_when_asked_and_defaults_off_for_large_volumes(mrml_scene, shared_data, tmp_path):
    """Item 9: a result gets 3-D surfaces only with Show 3D (finish's show_3d), which defaults to off for a large
    volume (the real 512 x 512 x 48 chest CT) and on for a small one (the real 30-slice abdominal CT); ticking and
    unticking later builds and removes them."""
    from swinssl_slicer.mrml_io import read_volume
    from swinssl_slicer.segment_logic import SegmentationLogic
    from swinssl_slicer.show_3d import LARGE_VOLUME_VOXELS, show_3d_by_default, show_in_3d

    ct = read_volume(mrml_scene, shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz", "Abdomen CT")
    chest = read_volume(mrml_scene, shared_data / "ct" / "chest_ct_lung1.nrrd", "Chest CT")
    assert show_3d_by_default(ct) and show_3d_by_default(None)
    assert not show_3d_by_default(chest) and 512 * 512 * 48 > LARGE_VOLUME_VOXELS
    labels = read_volume(mrml_scene, shared_data / "ct" / "abdomen_ct_small_3mm_labels.nii.gz", "labels")
    logic = SegmentationLogic(mrml_scene, models_folder=tmp_path / "models")
    surface = "Closed surface"
    try:
        run = finished_segment_run(mrml_scene, ct, labels, tmp_path / "run1", {5: "liver", 1: "spleen"})
        node = logic.finish(run, show_3d=False)
        segmentation = node.GetSegmentation()
        assert segmentation.GetNumberOfSegments() == 2 and not segmentation.ContainsRepresentation(surface)
        assert segmentation.ContainsRepresentation("Binary labelmap") and not run.folder.exists()
        show_in_3d(node, True)  # the box ticked afterwards
        assert segmentation.ContainsRepresentation(surface)
        liver = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("liver")).GetRepresentation(surface)
        assert liver.GetNumberOfPoints() > 100
        show_in_3d(node, False)
        assert not segmentation.ContainsRepresentation(surface) and segmentation.ContainsRepresentation("Binary labelmap")
        shown = logic.finish(finished_segment_run(mrml_scene, ct, labels, tmp_path / "run2", {5: "liver"}), show_3d=True)
        assert shown.GetSegmentation().ContainsRepresentation(surface)
    finally:
        logic.close()


DEMO_MODEL = REPO / "swinssl" / "resources" / "demo_organs"  # the bundled model package
IMPORT_PROGRAM = """
import json, sys, time
sys.modules.update(torch=None, monai=None)  # Slicer's process must not need them: the engine subprocess imports them
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from swinssl_slicer.catalogue_logic import CatalogueLogic

logic = CatalogueLogic(models_folder=Path(sys.argv[2]), temp_root=Path(sys.argv[5]))
try:
    logic.start_import(Path(sys.argv[4]) / "missing")
except FileNotFoundError as error:
    print(json.dumps(str(error)))
runs = [logic.start_import(Path(sys.argv[3]), name="imported"), logic.start_import(Path(sys.argv[4]))]
deadline = time.monotonic() + 120
while any(run.status() is None for run in runs) and time.monotonic() < deadline:
    for run in runs:
        logic.poll(run)
    time.sleep(0.1)
for run in runs:
    logic.poll(run)
    print(json.dumps({"status": run.status(), "messages": run.messages, "installed": str(run.installed), "folder": run.folder.exists()}))
"""


def test_import_runs_the_engine_as_a_subprocess_with_progress(tmp_path):
    """Item 8: Import... ran import_model (the network built with torch and MONAI) in Slicer's process, freezing the
    GUI. The shared logic now starts ``swinssl models import`` and follows its events, from a Python where importing
    torch or MONAI fails: a stage message while it works, the installed package at the end; a source that is no model
    is named in the failure; a missing one is refused before anything starts."""
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("no model here")
    result = subprocess.run([sys.executable, "-c", IMPORT_PROGRAM, str(REPO), str(tmp_path / "models"), str(DEMO_MODEL),
                             str(tmp_path / "not-a-model"), str(tmp_path / "temp")], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    missing, imported, refused = (json.loads(line) for line in result.stdout.strip().splitlines())
    assert missing == f"{tmp_path / 'not-a-model' / 'missing'}: no such folder or file to import"
    assert imported["status"] == f"Installed demo_organs in {tmp_path / 'models' / 'imported'}" and not imported["folder"]
    assert imported["messages"] == ["Reading demo_organs and checking its weights"]
    assert (tmp_path / "models" / "imported" / "model.json").is_file() and (tmp_path / "models" / "imported" / "model.safetensors").is_file()
    assert refused["status"].startswith(f"Import of not-a-model failed: {tmp_path / 'not-a-model'}: not a model package")
    assert refused["installed"] == "None" and not refused["folder"] and list((tmp_path / "temp").iterdir()) == []

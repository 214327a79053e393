"""Every face reads volumes the way the engine does (issue 22, section 3). The web app: a truncated .nii.gz is
refused, a real multi-acquisition oblique MR DICOM series opens as one volume, a failed open changes nothing, repeated
uploads of real files of several sizes keep the server alive, and no patient file is left in the temporary folder.
The Slicer logic: a volume Slicer read from a truncated file is refused before segmenting or adding it to a training set.

The DICOM series is built here from the real contrast T1 brain MR (../shared/data/mr/brain_t1c_brain1.nrrd): 20 of its
slices, rotated to an oblique orientation and written with SimpleITK as MR slices of one SeriesInstanceUID, each
with its own AcquisitionNumber (as some scanners write them). One server serves the browser tests of this module.
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from web_harness import WebServer, text_of, wait_for_text

MR_NAME = "brain_t1c_brain1.nrrd"
CT_NAME = "abdomen_ct_small_3mm.nii.gz"
DEMO_MODEL = Path(__file__).resolve().parents[1] / "swinssl" / "resources" / "demo_organs"
SERIES_UID = "1.2.826.0.1.3680043.8.498.22022022"
OBLIQUE_DEGREES = 17.0


def oblique_mr(shared_data: Path, slices: int = 20) -> sitk.Image:
    """``slices`` slices of the real brain MR, resampled onto a grid rotated about the left-right axis (oblique)."""
    mr = sitk.ReadImage(str(shared_data / "mr" / MR_NAME))
    rotation = sitk.VersorTransform((1.0, 0.0, 0.0), np.radians(OBLIQUE_DEGREES))
    direction = np.asarray(rotation.GetMatrix()).reshape(3, 3) @ np.asarray(mr.GetDirection()).reshape(3, 3)
    centre = np.asarray(mr.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in mr.GetSize()]))
    size, spacing = [mr.GetSize()[0], mr.GetSize()[1], slices], [mr.GetSpacing()[0], mr.GetSpacing()[1], 5.0]
    origin = centre - direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    return sitk.Resample(mr, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), spacing, direction.ravel().tolist(), 0.0,
                         sitk.sitkInt16)


def write_dicom_series(image: sitk.Image, folder: Path, uid: str = SERIES_UID, description: str = "T1 post oblique",
                       first_instance: int = 1) -> list[Path]:
    """One MR Image Storage file per slice of ``image``, all in series ``uid``, each slice its own AcquisitionNumber."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    i_then_j = (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])  # ImageOrientationPatient: the I, then J axis
    orientation = "\\".join(f"{value:.6f}" for value in i_then_j)
    paths = []
    for k in range(image.GetSize()[2]):
        number = first_instance + k
        tile = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {"0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0018": f"{uid}.{number}", "0008|0060": "MR",
                "0008|103e": description, "0010|0010": "Test^Phantom", "0020|000d": f"{uid}.0", "0020|000e": uid,
                "0020|0011": "7", "0020|0012": str(number), "0020|0013": str(number),
                "0020|0032": "\\".join(f"{value:.6f}" for value in position), "0020|0037": orientation,
                "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}", "0018|0050": f"{image.GetSpacing()[2]:.6f}"}
        for tag, value in tags.items():
            tile.SetMetaData(tag, value)
        path = folder / f"IM{number:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(tile)
        paths.append(path)
    return paths


def truncated_copy(source: Path, target: Path) -> Path:
    """The first 60 % of a real .nii.gz: an interrupted copy, which ITK would read with the rest of the head as 0."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * 0.6)])
    return target


@pytest.fixture(scope="module")
def site(tmp_path_factory, shared_data):
    """A data root with the real CT, the oblique multi-acquisition MR series, a truncated MR and a DICOM mixture
    (two acquisitions of one SeriesInstanceUID on interleaved, unevenly spaced positions); a private TMPDIR."""
    site = tmp_path_factory.mktemp("volume-reading")
    root = site / "data"
    (root / "ct").mkdir(parents=True)
    shutil.copy(shared_data / "ct" / CT_NAME, root / "ct" / CT_NAME)
    mr = oblique_mr(shared_data)
    write_dicom_series(mr, root / "mr_series")
    write_dicom_series(mr[:, :, :8], root / "mixture", uid=SERIES_UID + ".9")
    shifted = sitk.Image(mr[:, :, :4])
    shifted.SetOrigin(mr.TransformContinuousIndexToPhysicalPoint((0, 0, 0.3)))  # a second stack 1.5 mm off the first
    write_dicom_series(shifted, root / "mixture", uid=SERIES_UID + ".9", first_instance=101)
    brain = shared_data / "mr" / "brain_t1_colin27.nii.gz"
    truncated_copy(brain, root / "head_truncated.nii.gz")
    for name in ("models", "runs", "cases", "tmp"):
        (site / name).mkdir()
    return site


@pytest.fixture(scope="module")
def server(site):
    server = WebServer(site, "--data", str(site / "data"), "--models", str(site / "models"), "--runs", str(site / "runs"),
                       "--cases", str(site / "cases"), env={"TMPDIR": str(site / "tmp")})
    yield server
    server.stop()


def upload(page, *paths: Path) -> None:
    page.locator(".swinssl-upload input[type=file]").set_input_files([str(path) for path in paths])


def open_from_server(page, *names: str) -> None:
    """Clicks from the data roots down to ``names[-1]`` and its Open button (the folder shown is the server's state)."""
    browser = page.locator(".swinssl-segment-page .swinssl-browser")
    browser.locator(".swinssl-entry").first.wait_for()  # connected
    page.evaluate("window.trame.trigger('swinssl_browse', [null])")  # back to the roots
    browser.locator(".swinssl-entry", has_text="data").first.click()
    for name in names[:-1]:
        browser.locator(".swinssl-entry", has_text=name).first.click()
    browser.locator(".swinssl-entry", has_text=names[-1]).first.locator(".swinssl-open").click()


def state(page, key: str):
    return page.evaluate(f"window.trame.state.get('{key}')")


def test_a_truncated_nifti_is_refused_and_the_open_case_stays(page, server, site):
    """The engine refuses an interrupted copy of a real head MR; so does the page, by upload and from server data,
    and the case that was open (volume, its new segment, message, result check) is left as it was."""
    page.goto(server.url)
    open_from_server(page, "ct", CT_NAME)
    wait_for_text(page, ".swinssl-case", CT_NAME, 60)
    page.locator(".swinssl-editor button", has_text="Add segment").click()  # an unsaved edit of the open case
    segments = page.locator(".swinssl-editor .v-list input")
    segments.first.wait_for()
    message, volumes = text_of(page, ".swinssl-message"), state(page, "seg_volumes")
    page.evaluate("window.trame.state.set('seg_plausibility', ['liver: 992 mL, mean confidence 0.91, 3% unsure'])")

    upload(page, site / "data" / "head_truncated.nii.gz")
    error = wait_for_text(page, ".swinssl-error", "head_truncated.nii.gz", 60)
    assert "truncated or corrupt compressed file" in error and "Traceback" not in error
    open_from_server(page, "head_truncated.nii.gz")
    wait_for_text(page, ".swinssl-error", r"head_truncated\.nii\.gz: unreadable: truncated", 30)
    assert CT_NAME in text_of(page, ".swinssl-case") and text_of(page, ".swinssl-message") == message
    assert state(page, "seg_volumes") == volumes and segments.count() == 1
    assert state(page, "seg_plausibility") == ["liver: 992 mL, mean confidence 0.91, 3% unsure"]


def test_a_multi_acquisition_dicom_series_opens_as_one_volume(page, server, site):
    """The 20 slices of the oblique MR series, each its own AcquisitionNumber, are one volume by upload and from
    server data (trame-slicer's reader made 20 one-slice images of them); a mixture of two stacks is refused."""
    page.goto(server.url)
    upload(page, *sorted((site / "data" / "mr_series").iterdir()))
    wait_for_text(page, ".swinssl-message", r"^Opened IM0001\.dcm and 19 more: 1 volume\(s\)", 60)
    assert [volume["title"] for volume in state(page, "seg_volumes")] == ["7: T1 post oblique"]

    open_from_server(page, "mr_series")
    wait_for_text(page, ".swinssl-message", r"^Opened mr_series: 1 volume\(s\)", 60)
    open_from_server(page, "mixture")
    error = wait_for_text(page, ".swinssl-error", "mixture", 30)
    assert "slices are unevenly spaced" in error
    assert "mr_series" in text_of(page, ".swinssl-case")


def test_upload_soak_keeps_the_server_up_and_leaves_no_patient_file(page, server, site, shared_data, tmp_path):
    """12 uploads of real volumes of three sizes (3 of a 17.8 MB raw NRRD of the chest CT, the size that once crashed
    the server; 6 of the 2 MB MR; 3 of the 0.5 MB CT), one after another as fast as the page allows: each opens as
    its own case, the server stays up, every upload folder is removed once read. Bounded: 12 uploads, 60 s each at
    most, 240 s in all (about 30 s on an idle 2-core machine, 100 s on one shared by several test runs)."""
    chest = sitk.ReadImage(str(shared_data / "ct" / "chest_ct_lung1.nrrd"))
    large = tmp_path / "chest_ct_34_slices.nrrd"
    sitk.WriteImage(chest[:, :, :34], str(large), False)  # 512x512x34 int16, uncompressed: 17.8 MB
    files = [large, shared_data / "mr" / MR_NAME, shared_data / "ct" / CT_NAME, shared_data / "mr" / MR_NAME]
    page.goto(server.url)
    started = time.monotonic()
    for index in range(12):
        path = files[index % len(files)]
        upload(page, path)
        wait_for_text(page, ".swinssl-message", rf"^Opened {path.name}: 1 volume", 60)
        assert server.process.poll() is None, server.log.read_text(encoding="utf-8")[-3000:]
    assert time.monotonic() - started < 240
    assert not list((site / "tmp").glob("swinssl-web-upload-*"))
    assert "Fatal Python error" not in server.log.read_text(encoding="utf-8")


def test_the_series_is_read_as_the_engine_reads_it_and_refusals_add_nothing(mrml_scene, site, tmp_path):
    """The oblique series becomes one node with the engine's voxels and geometry (IJK-to-RAS = LPS flipped), saved
    with the scene; the truncated file and the two-stack mixture raise before any node is added."""
    import vtk
    from vtkmodules.util.numpy_support import vtk_to_numpy

    from swinssl_slicer.volume_reading import add_volume_node, read_checked_volumes
    from swinssl.io.discovery import find_volumes
    from swinssl.io.reader import read_volume

    series = site / "data" / "mr_series"
    (checked,) = read_checked_volumes(series, "mr_series")
    volume = add_volume_node(mrml_scene, checked)
    engine = read_volume(find_volumes([series])[0][0], 1)
    assert volume.GetName() == "7: T1 post oblique" and volume.GetImageData().GetDimensions() == engine.GetSize() == (256, 256, 20)
    voxels = vtk_to_numpy(volume.GetImageData().GetPointData().GetScalars()).reshape(20, 256, 256)  # (K, J, I)
    assert np.array_equal(voxels, sitk.GetArrayViewFromImage(engine))
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    matrix = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(3)])
    flip = np.diag([-1, -1, 1])
    assert np.allclose(matrix[:, :3], flip @ np.asarray(engine.GetDirection()).reshape(3, 3) @ np.diag(engine.GetSpacing()), atol=1e-4)
    assert np.allclose(matrix[:, 3], flip @ np.asarray(engine.GetOrigin()), atol=1e-3)
    assert abs(np.degrees(np.arccos(abs(matrix[2, 2]) / 5.0)) - OBLIQUE_DEGREES) < 0.1  # oblique, as written
    bundle = tmp_path / "case.mrb"
    assert mrml_scene.WriteToMRB(str(bundle))
    with zipfile.ZipFile(bundle) as archive:
        assert any(name.endswith(".nrrd") for name in archive.namelist()), archive.namelist()  # the voxels travel with the scene

    nodes = mrml_scene.GetNumberOfNodes()
    for bad, problem in ((site / "data" / "head_truncated.nii.gz", "truncated"), (site / "data" / "mixture", "unevenly spaced")):
        with pytest.raises(ValueError, match=problem):
            read_checked_volumes(bad, bad.name)
    assert mrml_scene.GetNumberOfNodes() == nodes


def test_a_file_the_browser_could_not_read_is_refused(tmp_path):
    """trame sends a file the browser failed to read with its error and no content: refused, never an empty file."""
    from swinssl_web.uploads import UploadInbox

    inbox = UploadInbox(limit_bytes=1000)
    inbox.begin()
    folder = inbox.folder
    with pytest.raises(ValueError, match=r"scan\.nrrd: the browser could not read the file \(NotReadableError\)"):
        inbox.add_part(0, 0, {"name": "scan.nrrd", "content": None, "error": "NotReadableError"})
    assert not folder.exists()


def test_slicer_logic_refuses_a_volume_read_from_a_truncated_file(mrml_scene, site, shared_data, tmp_path):
    """Slicer's own reader (Add Data: the volumes logic, which keeps the file in the node's storage node) opens the
    truncated head MR without a word (the missing voxels 0); segmenting it or adding it to a training set is refused
    with the file named, before any engine starts. The intact file is accepted."""
    import slicer

    from swinssl_slicer.segment_logic import SegmentationLogic
    from swinssl_slicer.training_logic import TrainingLogic
    from swinssl_slicer.volume_reading import check_source_files

    volumes = slicer.modules.volumes.logic()
    truncated = volumes.AddArchetypeVolume(str(site / "data" / "head_truncated.nii.gz"), "head")
    assert truncated.GetImageData().GetDimensions() == (181, 217, 181)  # read silently
    logic = SegmentationLogic(mrml_scene, temp_root=tmp_path / "temp")
    with pytest.raises(ValueError, match=r"head \(head_truncated\.nii\.gz\): unreadable: truncated or corrupt compressed file"):
        logic.start([truncated], DEMO_MODEL, device="cpu")
    assert logic.active == [] and not list((tmp_path / "temp").glob("*"))
    segmentation = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "head segmentation")
    with pytest.raises(ValueError, match="head_truncated.nii.gz"):
        TrainingLogic(mrml_scene).export_scene_cases([(truncated, segmentation)], tmp_path / "cases")
    assert not (tmp_path / "cases").exists()

    check_source_files([volumes.AddArchetypeVolume(str(shared_data / "ct" / CT_NAME), "ct")])


def test_a_closed_case_is_freed_on_the_main_thread_only():
    """The cause of the upload crash: once the editor lets go of a case and its nodes leave the scene, trame-slicer's
    Segmentation wrapper keeps them alive in a reference cycle, so Python's collector destroys them, in whichever
    thread starts a collection: in the server, one of trame-rca's encoding threads, which run while the main thread is
    inside VTK (it releases the GIL). With the server's setting, a worker thread's allocations free nothing; the main
    thread's collection (the server's polling) frees both nodes."""
    import gc
    import threading
    import weakref

    import vtk
    from trame_slicer.core import SlicerApp

    from swinssl_web.main_thread_gc import FULL_EVERY, collect_garbage, collect_on_main_thread_only

    app = SlicerApp()
    volume = app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "case")
    voxels = vtk.vtkImageData()
    voxels.SetDimensions(64, 64, 16)
    voxels.AllocateScalars(vtk.VTK_SHORT, 1)
    volume.SetAndObserveImageData(voxels)
    editor = app.segmentation_editor
    editor.set_active_segmentation(editor.create_empty_segmentation_node(), volume)
    segmentation = editor.active_segmentation_node
    freed_in: list[str] = []
    references = [weakref.ref(node, lambda _: freed_in.append(threading.current_thread().name)) for node in (volume, segmentation)]
    collect_on_main_thread_only()
    try:
        editor.clear()  # as SegmentPage.close_case does
        app.scene.RemoveNode(volume)
        app.scene.RemoveNode(segmentation)
        del volume, segmentation, voxels
        assert all(reference() is not None for reference in references)  # kept by the cycle only

        def allocate() -> None:  # as an encoding thread does, many times over
            for _ in range(100_000):
                cycle: list = []
                cycle.append(cycle)

        worker = threading.Thread(target=allocate, name="encoder")
        worker.start()
        worker.join()
        assert freed_in == []
        collect_garbage(FULL_EVERY)
        assert freed_in == ["MainThread", "MainThread"]
    finally:
        gc.enable()


def test_the_server_removes_temporary_patient_files_when_it_stops(page, server, site):
    """An upload left half-way (begun, never ended: the page closed) is removed when the server stops (the module's
    server: this test runs last)."""
    page.goto(server.url)
    page.locator(".swinssl-segment-page .swinssl-entry").first.wait_for()
    page.evaluate("window.trame.trigger('swinssl_upload_begin')")
    deadline = time.monotonic() + 10
    while not list((site / "tmp").glob("swinssl-web-upload-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list((site / "tmp").glob("swinssl-web-upload-*"))
    server.stop()
    assert server.process.returncode == 0
    assert not list((site / "tmp").glob("swinssl-web-upload-*"))


def test_a_starting_server_removes_the_uploads_of_a_server_that_died(tmp_path, monkeypatch):
    """A crash runs no clean-up (the segfault left its patient file in /tmp): the next server removes the upload
    folders of server processes that are gone, and leaves those of live ones."""
    import subprocess
    import sys
    import tempfile

    from swinssl_web.uploads import PREFIX, UploadInbox

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = tmp_path / f"{PREFIX}{ended.stdout.strip()}-abc"
    live = tmp_path / f"{PREFIX}{os.getpid()}-def"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "Doe_John.nrrd").write_bytes(b"patient")
    UploadInbox(limit_bytes=1000)
    assert not dead.exists() and live.exists()

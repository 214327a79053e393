"""SwinSSL Web end to end, as a user works: a real ``swinssl web`` server, Debian's headless Chromium, the real
abdomen CT from ../shared/data, tiny model packages and real engine subprocesses. Each test starts its own
server on 127.0.0.1 and saves screenshots in Testing/screenshots."""

from __future__ import annotations

import json
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import slicerio
import SimpleITK as sitk

from conftest import run_cli
from test_segmentation import make_package
from web_harness import WebServer, fill, screenshot, text_of, wait_for_text

CT_NAME = "abdomen_ct_small_3mm.nii.gz"
DEMO_MODEL = Path(__file__).resolve().parents[1] / "swinssl" / "resources" / "demo_organs"
DEMO_ORGANS = ["liver", "spleen", "kidney_right", "kidney_left", "stomach", "aorta"]  # its model.json, in order


@pytest.fixture
def site(tmp_path, shared_data):
    """A data root holding the real CT, an empty models folder and runs / training-set folders."""
    root = tmp_path / "data"
    (root / "ct").mkdir(parents=True)
    shutil.copy(shared_data / "ct" / CT_NAME, root / "ct" / CT_NAME)
    for name in ("models", "runs", "cases"):
        (tmp_path / name).mkdir()
    return tmp_path


def start(site: Path, *extra: str) -> WebServer:
    return WebServer(site, "--data", str(site / "data"), "--models", str(site / "models"), "--runs", str(site / "runs"),
                     "--cases", str(site / "cases"), *extra)


@pytest.fixture
def server(site):
    server = start(site)
    yield server
    server.stop()


def upload_ct(page, server, shared_data) -> None:
    page.goto(server.url)
    page.locator(".swinssl-upload input[type=file]").set_input_files(str(shared_data / "ct" / CT_NAME))
    wait_for_text(page, ".swinssl-case", CT_NAME, 60)


def segment(page, timeout_s: float = 240) -> None:
    page.locator(".swinssl-segment").click()
    wait_for_text(page, ".swinssl-message", r"^Done: \d+ segments", timeout_s)


def download(page, selector: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.locator(selector).click()
    target = folder / info.value.suggested_filename
    info.value.save_as(target)
    return target


def segment_masks(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Each named segment of a .seg.nrrd as a boolean (K, J, I) array on the file's grid."""
    segmentation = slicerio.read_segmentation(str(path))
    voxels = np.asarray(segmentation["voxels"])
    masks = {}
    for segment in segmentation["segments"]:
        if segment["name"] in names:
            layer = voxels[..., segment["layer"]] if voxels.ndim == 4 else voxels
            masks[segment["name"]] = (layer == segment["labelValue"]).transpose(2, 1, 0)  # slicerio arrays are (I, J, K)
    return masks


def test_upload_segment_and_download_match_the_engine(page, server, site, shared_data, tmp_path):
    """Journey 1: upload the real CT, segment it with the bundled organ model (tiny: feature size 12, 3 mm),
    see its segment names, download the .seg.nrrd: the server's segmentation has the input's geometry and
    the engine's own voxels."""
    package = Path(shutil.copytree(DEMO_MODEL, site / "models" / "demo_organs"))
    upload_ct(page, server, shared_data)
    page.reload()  # the model list is read when the page is (re)loaded
    wait_for_text(page, ".swinssl-model-info", "6 segments")
    segment(page)
    shown = page.locator(".swinssl-editor .v-list input").evaluate_all("fields => fields.map(field => field.value)")
    assert shown == DEMO_ORGANS  # the segment list's (editable) names, in the model's order
    screenshot(page, "web-segment-result")

    downloaded = download(page, ".swinssl-download-seg", tmp_path)
    assert downloaded.name == "abdomen_ct_small_3mm.seg.nrrd"
    ct, result = sitk.ReadImage(str(shared_data / "ct" / CT_NAME)), sitk.ReadImage(str(downloaded))
    assert result.GetSize()[:3] == ct.GetSize()
    assert np.allclose(result.GetOrigin(), ct.GetOrigin(), atol=1e-3) and np.allclose(result.GetSpacing()[:3], ct.GetSpacing(), atol=1e-4)
    assert np.allclose(result.GetDirection(), ct.GetDirection(), atol=1e-5)

    reference = tmp_path / "cli.seg.nrrd"  # the same model on the same file through the command line
    completed = run_cli("segment", "--model", str(package), "--input", str(shared_data / "ct" / CT_NAME), "--output", str(reference),
                        "--device", "cpu")
    assert completed.returncode == 0, completed.stderr
    ours, theirs = segment_masks(downloaded, DEMO_ORGANS), segment_masks(reference, DEMO_ORGANS)
    assert sorted(ours) == sorted(DEMO_ORGANS)
    assert ours["liver"].sum() > 1000  # real anatomy: the liver is found
    for name in DEMO_ORGANS:
        assert np.array_equal(ours[name], theirs[name]), name

    scene = download(page, ".swinssl-download-mrb", tmp_path)
    with zipfile.ZipFile(scene) as bundle:
        names = bundle.namelist()
    assert any(name.endswith(".mrml") for name in names) and any(name.endswith(".seg.nrrd") for name in names), names


def test_paint_add_to_training_set_and_fine_tune(page, server, site, shared_data, tmp_path):
    """Journey 2: correct the result with Paint (undo becomes possible), add the case to the training set,
    fine-tune the current model on it and follow the run to a new installed model."""
    shutil.copytree(DEMO_MODEL, site / "models" / "demo_organs")
    upload_ct(page, server, shared_data)
    page.reload()
    wait_for_text(page, ".swinssl-model-info", "6 segments")
    segment(page)
    before = segment_masks(download(page, ".swinssl-download-seg", tmp_path), DEMO_ORGANS)

    page.locator(".swinssl-editor button:has(.mdi-brush)").click()
    view = page.locator("img.image-display-area").first.bounding_box()
    x, y = view["x"] + view["width"] / 2, view["y"] + view["height"] / 2
    page.mouse.move(x - 60, y)
    page.mouse.down()
    for offset in range(0, 121, 6):
        page.mouse.move(x - 60 + offset, y + offset / 4)
        time.sleep(0.03)
    page.mouse.up()
    page.wait_for_function("!document.querySelector('button:has(.mdi-undo)').disabled", timeout=30_000)
    page.wait_for_timeout(2000)  # the views re-render with the painted voxels
    screenshot(page, "web-paint-correction")

    page.locator(".swinssl-add-case").click()
    wait_for_text(page, ".swinssl-cases", "^1 case")
    cases = sorted((site / "cases").glob("*.seg.nrrd"))
    assert [case.name for case in cases] == ["abdomen_ct_small_3mm.seg.nrrd"]
    assert (site / "cases" / "abdomen_ct_small_3mm.nrrd").is_file()
    after = segment_masks(cases[0], DEMO_ORGANS)
    painted = DEMO_ORGANS[0]  # the editor's active segment is the first
    assert after[painted].sum() > before[painted].sum()

    fill(page, ".swinssl-finetune-steps", 2)
    page.locator(".swinssl-finetune-current").click()
    wait_for_text(page, ".swinssl-train-status", "^Fine-tuning", 30)
    screenshot(page, "web-finetune-progress")
    wait_for_text(page, ".swinssl-train-status", "^Finished", 300)
    events = page.evaluate("window.trame.state.get('train_events')")
    assert {1, 2} <= {row["step"] for row in events if row["event"] == "progress"}  # progress was shown step by step
    tuned = site / "models" / "demo-organs-tuned"
    assert (tuned / "model.json").is_file() and (tuned / "model.safetensors").is_file()
    page.locator(".swinssl-tab-segment").click()
    page.wait_for_function("window.trame.state.get('seg_models').some(model => model.title === 'demo-organs-tuned')", timeout=10_000)
    page.locator(".swinssl-model").click()
    page.locator(".v-overlay .v-list-item-title", has_text="demo-organs-tuned").wait_for()  # the new model is offered


def test_pretraining_chart_previews_stop_and_resume(page, server, site, shared_data):
    """Journey 3: pretraining over a server folder draws the loss chart and shows the three preview volumes;
    Stop writes a checkpoint and Resume continues the step count to the end."""
    shutil.copy(shared_data / "ct" / "abdomen_ct_3mm.nii.gz", site / "data" / "ct")  # 336 mm long: crops hold anatomy
    page.goto(server.url)
    page.locator(".swinssl-tab-train").click()
    page.locator(".swinssl-train-page .swinssl-use_folder").first.click()
    wait_for_text(page, ".swinssl-train-data", "data")
    fill(page, ".swinssl-run-name", "web-run")
    for selector, value in ((".swinssl-roi", 64), (".swinssl-feature-size", 12), (".swinssl-steps", 4), (".swinssl-preview-every", 1),
                            (".swinssl-weight-contrastive", 0.5)):
        fill(page, selector, value)
    page.locator(".swinssl-start").click()
    wait_for_text(page, ".swinssl-preview-caption", "of step [1-4]", 240)
    first_points = page.locator(".swinssl-loss-line").first.get_attribute("points").split()
    page.locator(".swinssl-stop").click()
    status = wait_for_text(page, ".swinssl-train-status", "^Stopped at step", 240)
    stopped_at = int(status.split("step ")[1].split(" ")[0])
    assert 1 <= stopped_at < 4 and (site / "runs" / "web-run" / "checkpoint.pt").is_file()
    config = json.loads((site / "runs" / "web-run" / "config.json").read_text())
    form = (config["roi"], config["feature_size"], config["loss_rotation"], config["loss_contrast"], config["loss_inpaint"])
    assert form == (64, 12, 1.0, 0.5, 1.0)  # what the form says reaches the engine
    screenshot(page, "web-pretraining-previews")

    page.locator(".swinssl-resume").click()
    wait_for_text(page, ".swinssl-train-status", "^Finished", 300)
    lines = page.locator(".swinssl-loss-line")
    assert lines.count() >= 3  # total, rotation, contrastive, inpainting (the losses the engine logs)
    assert len(first_points) >= 1 and len(lines.first.get_attribute("points").split()) == 4  # one point a step, none repeated
    rows = page.evaluate("window.trame.state.get('train_events')")
    assert [row["detail"] for row in rows if row["event"] == "start"] == [f"4 steps from step {stopped_at}", "4 steps from step 0"]
    steps = [row["step"] for row in rows if row["event"] == "progress"]
    assert max(steps) == 4 and stopped_at + 1 in steps and steps.count(stopped_at + 1) == 1
    assert text_of(page, ".swinssl-preview-caption").endswith("of step 4")
    page.locator(".swinssl-loss-chart").scroll_into_view_if_needed()
    screenshot(page, "web-pretraining-finished")


def test_cancel_leaves_no_process_behind(page, server, site, shared_data):
    """Journey 4: open a DICOM series from the server's data folders, Segment, then Cancel: the engine's whole
    process tree ends and the page says so."""
    make_package(site / "models" / "slow", spacing=(1.5, 1.5, 1.5))  # many windows: still running when cancelled
    shutil.copytree(shared_data / "ct" / "abdomen_ct_dicom_series", site / "data" / "ct" / "abdomen_ct_dicom_series")
    page.goto(server.url)
    browser = page.locator(".swinssl-segment-page .swinssl-browser")
    browser.locator(".swinssl-entry", has_text="data").click()
    browser.locator(".swinssl-entry", has_text="ct").click()
    browser.locator(".swinssl-entry", has_text="abdomen_ct_dicom_series").locator(".swinssl-open").click()
    wait_for_text(page, ".swinssl-case", "abdomen_ct_dicom_series", 60)
    page.locator(".swinssl-input", has_text="CT Body 3.0").wait_for()  # the series (its description), as input 1
    wait_for_text(page, ".swinssl-model-info", "3 segments")
    page.locator(".swinssl-segment").click()
    wait_for_text(page, ".swinssl-message", r"window \d+ of \d+", 120)
    assert server.engine_processes()
    page.locator(".swinssl-cancel").click()
    wait_for_text(page, ".swinssl-message", "^Cancelled")
    deadline = time.monotonic() + 15
    while server.engine_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.engine_processes() == []
    assert page.locator(".swinssl-segment").is_visible()
    screenshot(page, "web-cancelled")


def test_bad_input_gets_a_clear_message(page, site, shared_data, tmp_path):
    """Journey 5: an unreadable upload, one over the size limit, a model that needs two inputs for one volume
    and an engine that fails (corrupt weights) each get a message in the page, never a hang or a traceback."""
    from swinssl.labels.table import LabelTable
    from swinssl.network import build_swin_unetr
    from swinssl.package import InputChannel, ModelPackage

    two_inputs = ModelPackage("ct-pet", LabelTable.from_names(["lesion"]), [InputChannel("CT", "ct"), InputChannel("PET", "pet")],
                              (6.0, 6.0, 6.0), 64, 12)
    two_inputs.save(site / "models" / "ct-pet", build_swin_unetr(2, 2, 12).state_dict())
    broken_model = Path(shutil.copytree(DEMO_MODEL, site / "models" / "broken"))
    (broken_model / "model.safetensors").write_bytes(b"not safetensors" * 64)
    server = start(site, "--upload-limit-mb", "1")
    try:
        page.goto(server.url)
        broken = tmp_path / "broken.nii.gz"
        broken.write_bytes(b"\x1f\x8b this is not a NIfTI file" * 100)
        page.locator(".swinssl-upload input[type=file]").set_input_files(str(broken))
        error = wait_for_text(page, ".swinssl-error", "broken.nii.gz", 60)
        assert "not a readable volume" in error
        screenshot(page, "web-corrupt-upload")
        large = tmp_path / "large.nrrd"
        large.write_bytes(np.random.default_rng(0).bytes(1_500_000))
        page.locator(".swinssl-upload input[type=file]").set_input_files(str(large))
        error = wait_for_text(page, ".swinssl-error", "large.nrrd", 30)
        assert "more than the server accepts (1 MB)" in error
        assert "No volume open" in text_of(page, ".swinssl-case")

        page.locator(".swinssl-upload input[type=file]").set_input_files(str(shared_data / "ct" / CT_NAME))
        wait_for_text(page, ".swinssl-case", CT_NAME, 60)
        choose_model(page, "ct-pet")
        page.locator(".swinssl-segment").click()
        wait_for_text(page, ".swinssl-error", r"model 'ct-pet' needs 2 input volume\(s\): CT, PET", 30)
        choose_model(page, "demo-organs")  # the copy with corrupt weights
        page.locator(".swinssl-segment").click()
        error = wait_for_text(page, ".swinssl-error", "model.safetensors", 120)
        assert "Traceback" not in error
        assert page.locator(".swinssl-segment").is_visible()  # ready for the next try
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


def choose_model(page, name: str) -> None:
    page.locator(".swinssl-model").click()
    page.locator(".v-overlay .v-list-item-title", has_text=name).click()
    wait_for_text(page, ".swinssl-model", name)


def test_download_from_the_catalogue_then_segment_with_a_confidence_map(page, site, shared_data, tmp_path):
    """Journey 6: the catalogue card downloads a model (a zip with the model-zoo layout, served on 127.0.0.1), shows its
    progress and offers the installed model; segmenting with "Confidence map" shows each segment's confidence."""
    from test_model_download import BUNDLE_ZIP, FileServer, bundle_entry, bundle_zip

    files = FileServer()
    data = bundle_zip(tmp_path)
    files.files["/zoo/" + BUNDLE_ZIP] = data
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps([bundle_entry(files.url("/zoo/" + BUNDLE_ZIP), data)]))
    server = start(site, "--catalogue", str(catalogue))
    try:
        upload_ct(page, server, shared_data)
        entry = page.locator(".swinssl-catalogue-entry").first
        assert "SHA1 checked" in entry.inner_text() and "Apache-2.0 (test)" in entry.inner_text()
        entry.locator(".swinssl-fetch-model").click()
        wait_for_text(page, ".swinssl-fetch-message", "^Installed tiny-btcv", 120)
        assert entry.locator(".swinssl-fetch-model").inner_text().strip().lower() == "installed"
        assert (site / "models" / "tiny-btcv" / "model.json").is_file()
        wait_for_text(page, ".swinssl-model-info", "3 segments")  # the downloaded model is chosen: it is the only one
        page.locator(".swinssl-confidence input").check()
        segment(page)
        lines = page.locator(".swinssl-confidence-line").all_inner_texts()
        assert lines and all(re.match(r"^\w+: mean confidence [01]\.\d\d, \d+% of its voxels unsure$", line) for line in lines), lines
        screenshot(page, "web-confidence")
    finally:
        server.stop()
        files.httpd.shutdown()
        files.httpd.server_close()

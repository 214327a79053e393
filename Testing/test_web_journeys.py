"""SwinSSL Web end to end, as a user works: a real ``swinssl web`` server, Debian's headless Chromium, the real
abdomen CT from ../shared/data, tiny model packages and real engine subprocesses. Each test starts its own
server on 127.0.0.1 and saves screenshots in Testing/screenshots."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import slicerio
import SimpleITK as sitk

from conftest import run_cli
from test_segmentation import ORGANS, make_package
from web_harness import WebServer, block_outside_requests, fill, require_browser, screenshot, text_of, wait_for_text

CT_NAME = "abdomen_ct_small_3mm.nii.gz"


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
    """Journey 1: upload the real CT, segment with a tiny package, see its segment names, download the
    .seg.nrrd: the server's segmentation has the input's geometry and the engine's own voxels."""
    package = make_package(site / "models" / "tiny", spacing=(6.0, 6.0, 6.0))
    upload_ct(page, server, shared_data)
    page.reload()  # the model list is read when the page is (re)loaded
    wait_for_text(page, ".swinssl-model-info", "3 segments")
    segment(page)
    shown = page.locator(".swinssl-editor .v-list input").evaluate_all("fields => fields.map(field => field.value)")
    assert shown == ORGANS  # the segment list's (editable) names, in the model's order
    screenshot(page, "web-segment-result")

    downloaded = download(page, ".swinssl-download-seg", tmp_path)
    assert downloaded.name == "abdomen_ct_small_3mm.seg.nrrd"
    ct, result = sitk.ReadImage(str(shared_data / "ct" / CT_NAME)), sitk.ReadImage(str(downloaded))
    assert result.GetSize()[:3] == ct.GetSize()
    assert np.allclose(result.GetOrigin(), ct.GetOrigin(), atol=1e-3) and np.allclose(result.GetSpacing()[:3], ct.GetSpacing(), atol=1e-4)
    assert np.allclose(result.GetDirection(), ct.GetDirection(), atol=1e-5)

    reference = tmp_path / "cli.seg.nrrd"  # the same model on the same file through the command line
    completed = run_cli("segment", "--model", str(package.path), "--input", str(shared_data / "ct" / CT_NAME), "--output", str(reference),
                        "--device", "cpu")
    assert completed.returncode == 0, completed.stderr
    ours, theirs = segment_masks(downloaded, ORGANS), segment_masks(reference, ORGANS)
    assert sorted(ours) == sorted(ORGANS)
    assert sum(mask.sum() for mask in ours.values()) > 0
    for name in ORGANS:
        assert np.array_equal(ours[name], theirs[name]), name

    scene = download(page, ".swinssl-download-mrb", tmp_path)
    with zipfile.ZipFile(scene) as bundle:
        names = bundle.namelist()
    assert any(name.endswith(".mrml") for name in names) and any(name.endswith(".seg.nrrd") for name in names), names


def test_paint_add_to_training_set_and_fine_tune(page, server, site, shared_data, tmp_path):
    """Journey 2: correct the result with Paint (undo becomes possible), add the case to the training set,
    fine-tune the current model on it and follow the run to a new installed model."""
    make_package(site / "models" / "tiny", spacing=(6.0, 6.0, 6.0))
    upload_ct(page, server, shared_data)
    page.reload()
    wait_for_text(page, ".swinssl-model-info", "3 segments")
    segment(page)
    before = segment_masks(download(page, ".swinssl-download-seg", tmp_path), ORGANS)

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
    screenshot(page, "web-paint-correction")

    page.locator(".swinssl-add-case").click()
    wait_for_text(page, ".swinssl-cases", "^1 case")
    cases = sorted((site / "cases").glob("*.seg.nrrd"))
    assert [case.name for case in cases] == ["abdomen_ct_small_3mm.seg.nrrd"]
    assert (site / "cases" / "abdomen_ct_small_3mm.nrrd").is_file()
    after = segment_masks(cases[0], ORGANS)
    painted = ORGANS[0]  # the editor's active segment is the first
    assert after[painted].sum() > before[painted].sum()

    fill(page, ".swinssl-finetune-steps", 2)
    page.locator(".swinssl-finetune-current").click()
    wait_for_text(page, ".swinssl-train-status", r"Fine-tuning: step [12] of 2", 240)
    screenshot(page, "web-finetune-progress")
    wait_for_text(page, ".swinssl-train-status", "^Finished", 300)
    tuned = site / "models" / "tiny-abdomen-tuned"
    assert (tuned / "model.json").is_file() and (tuned / "model.safetensors").is_file()
    page.locator(".swinssl-tab-segment").click()
    page.wait_for_function("window.trame.state.get('seg_models').some(model => model.title === 'tiny-abdomen-tuned')", timeout=10_000)
    page.locator(".swinssl-model").click()
    page.locator(".v-overlay .v-list-item-title", has_text="tiny-abdomen-tuned").wait_for()  # the new model is offered


def test_pretraining_chart_previews_stop_and_resume(page, server, site):
    """Journey 3: pretraining over a server folder draws the loss chart and shows the three preview volumes;
    Stop writes a checkpoint and Resume continues the step count to the end."""
    page.goto(server.url)
    page.locator(".swinssl-tab-train").click()
    page.locator(".swinssl-train-page .swinssl-use_folder").first.click()
    wait_for_text(page, ".swinssl-train-data", "data")
    fill(page, ".swinssl-run-name", "web-run")
    for selector, value in ((".swinssl-roi", 64), (".swinssl-feature-size", 12), (".swinssl-steps", 4), (".swinssl-preview-every", 1)):
        fill(page, selector, value)
    page.locator(".swinssl-start").click()
    wait_for_text(page, ".swinssl-preview-caption", "of step [1-4]", 240)
    first_points = page.locator(".swinssl-loss-line").first.get_attribute("points").split()
    page.locator(".swinssl-stop").click()
    status = wait_for_text(page, ".swinssl-train-status", "^Stopped at step", 240)
    stopped_at = int(status.split("step ")[1].split(" ")[0])
    assert 1 <= stopped_at < 4 and (site / "runs" / "web-run" / "checkpoint.pt").is_file()
    screenshot(page, "web-pretraining-previews")

    page.locator(".swinssl-resume").click()
    wait_for_text(page, ".swinssl-train-status", "^Finished", 300)
    lines = page.locator(".swinssl-loss-line")
    assert lines.count() >= 3  # total, rotation, contrastive, inpainting (the losses the engine logs)
    assert len(lines.first.get_attribute("points").split()) == 4 > len(first_points) - 1  # one point a step, none repeated
    steps = [int(cell) for cell in page.locator(".swinssl-events tbody tr td:first-child").all_inner_texts() if cell.strip().isdigit()]
    assert max(steps) == 4 and stopped_at + 1 in steps
    assert text_of(page, ".swinssl-preview-caption").endswith("of step 4")
    screenshot(page, "web-pretraining-finished")


def test_cancel_leaves_no_process_behind(page, server, site, shared_data):
    """Journey 4: Cancel during segmentation ends the engine's whole process tree and says so."""
    make_package(site / "models" / "slow", spacing=(1.5, 1.5, 1.5))  # many windows: still running when cancelled
    upload_ct(page, server, shared_data)
    page.reload()
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


def test_corrupt_and_oversized_uploads_get_a_clear_message(page, site, tmp_path):
    """Journey 5: an unreadable upload and one over the size limit each get a message naming the file."""
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
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()

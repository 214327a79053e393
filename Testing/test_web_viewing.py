"""What a radiologist reads around a segmentation (issue 26, items 1-4): segment statistics and orientation letters on
a real MRML scene, distinct colours for neighbouring organs, and in the web app (one real server, headless Chromium,
the real CT of ../shared/data) window/level by drag and presets, orientation letters and slice offsets, the data
probe and the linked crosshair. The statistics beside a result, their update after an edit and the Train page's
preview window are checked inside the journeys of test_web_journeys.py, which segment, paint and pretrain anyway
(``check_*`` below)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

CT_NAME = "abdomen_ct_small_3mm.nii.gz"  # the demo CT is this file, byte for byte
DEMO_ORGANS = ["liver", "spleen", "kidney_right", "kidney_left", "stomach", "aorta"]  # the demo model's, in order


# --- segment statistics on a real MRML scene ----------------------------------------------------------
def load_ct_and_labels(scene, shared_data: Path):
    """The real CT as a volume node and its first three labelled structures (and one empty segment) as a segmentation."""
    import slicer
    from swinssl_slicer.volume_reading import add_volume_node, read_checked_volumes

    volume = add_volume_node(scene, read_checked_volumes(shared_data / "ct" / CT_NAME, CT_NAME)[0])
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "ct" / CT_NAME.replace(".nii.gz", "_labels.nii.gz"))))  # (K, J, I)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "labels")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    values = [int(v) for v in np.unique(labels) if v][:3]
    for value in values:
        segment_id = segmentation.GetSegmentation().AddEmptySegment(f"label {value}", f"label {value}")
        slicer.util.updateSegmentBinaryLabelmapFromArray((labels == value).astype(np.uint8), segmentation, segment_id, volume)
    overlap = segmentation.GetSegmentation().AddEmptySegment("overlap", "overlap")  # the first structure again: overlaps it wholly
    slicer.util.updateSegmentBinaryLabelmapFromArray((labels == values[0]).astype(np.uint8), segmentation, overlap, volume)
    segmentation.GetSegmentation().AddEmptySegment("nothing", "nothing")
    return volume, segmentation, labels, values


def test_segment_statistics_match_the_voxels_and_flag_empty_segments(mrml_scene, shared_data):
    from swinssl_slicer.segment_statistics import intensity_unit, segment_statistics

    volume, segmentation, labels, values = load_ct_and_labels(mrml_scene, shared_data)
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "ct" / CT_NAME))).astype(np.float64)  # (K, J, I)
    table = segment_statistics(segmentation, volume)
    assert [row.name for row in table] == [f"label {v}" for v in values] + ["overlap", "nothing"]
    assert table[-2].voxels == table[0].voxels and table[-2].mean == pytest.approx(table[0].mean)  # overlapping segments keep their voxels
    for row, value in zip(table, values):
        inside = ct[labels == value]
        assert row.voxels == inside.size > 0
        assert row.volume_ml == pytest.approx(inside.size * 27 / 1000)  # 3 mm isotropic voxels
        assert row.mean == pytest.approx(inside.mean()) and row.sd == pytest.approx(inside.std())
        assert f"{row.volume_ml:.1f} mL" in row.line()
    assert intensity_unit(volume) == "HU" and f"{table[0].mean:.0f} ± {table[0].sd:.0f} HU" in table[0].line("HU")
    empty = table[-1]
    assert empty.empty and empty.mean is None and "EMPTY" in empty.line()
    first = table[0].segment_id  # an edit (one slice of the first segment erased) changes its figures only
    mask = (labels == values[0]).astype(np.uint8)
    erased = int(mask[mask.shape[0] // 2].sum())
    mask[mask.shape[0] // 2] = 0
    import slicer

    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, first, volume)
    assert segment_statistics(segmentation, volume, [first])[0].voxels == table[0].voxels - erased


def test_orientation_letters_follow_the_slice_node(mrml_scene):
    """Letters at each edge from the slice node's SliceToRAS: the axial view in radiological convention (patient's
    right on the left), coronal and sagittal as Slicer shows them, and a rotated slice gets two letters per edge."""
    pytest.importorskip("trame_slicer")
    import slicer
    from swinssl_web.view_tools import slice_marks

    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(mrml_scene, True)  # as trame-slicer's SlicerApp (and Slicer) do
    node = mrml_scene.AddNewNodeByClass("vtkMRMLSliceNode")
    node.SetOrientation("Axial")
    node.SetSliceOffset(-12.5)
    assert slice_marks(node) == {"left": "R", "right": "L", "top": "A", "bottom": "P", "offset": "S -12.5 mm"}
    node.SetOrientation("Coronal")
    assert {key: slice_marks(node)[key] for key in ("left", "right", "top", "bottom")} == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    node.SetOrientation("Sagittal")
    node.SetSliceOffset(4.0)
    marks = slice_marks(node)
    assert {marks["left"], marks["right"]} == {"A", "P"} and (marks["top"], marks["bottom"]) == ("S", "I")
    assert marks["offset"] == "R -4.0 mm"  # its normal points left: 4 mm along it is 4 mm left of the origin
    matrix = node.GetSliceToRAS()  # an axial view turned by 45 degrees: screen right points left and back
    for row, values in enumerate(([-0.7071, -0.7071, 0.0], [-0.7071, 0.7071, 0.0], [0.0, 0.0, 1.0])):
        for column, value in enumerate(values):
            matrix.SetElement(row, column, value)
    assert len(slice_marks(node)["right"]) == 2 and set(slice_marks(node)["right"]) == {"L", "P"}


def test_neighbouring_organs_have_distinct_colours():
    """Liver and stomach (and other organs that touch) differ by a CIE76 colour difference of at least 25."""
    from swinssl.labels.anatomy import standard_anatomy

    def lab(rgb):
        linear = [((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92 for c in rgb]
        xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear / [0.9505, 1.0, 1.089]
        f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
        return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])

    neighbours = [("liver", "stomach"), ("liver", "kidney right"), ("liver", "gallbladder"), ("liver", "inferior vena cava"), ("liver", "heart"),
                  ("liver", "duodenum"), ("liver", "lung right"), ("spleen", "stomach"), ("spleen", "pancreas"), ("spleen", "kidney left"),
                  ("stomach", "pancreas"), ("stomach", "esophagus"), ("stomach", "colon"), ("stomach", "duodenum"), ("stomach", "small bowel"),
                  ("pancreas", "duodenum"), ("pancreas", "kidney left"), ("kidney right", "adrenal gland right"), ("kidney right", "duodenum"),
                  ("kidney right", "inferior vena cava"), ("kidney right", "colon"), ("kidney left", "aorta"), ("aorta", "inferior vena cava"),
                  ("aorta", "esophagus"), ("heart", "aorta"), ("heart", "lung left"), ("colon", "small bowel"), ("urinary bladder", "colon"),
                  ("urinary bladder", "small bowel"), ("gallbladder", "duodenum")]
    for first, second in neighbours:
        difference = np.linalg.norm(lab(standard_anatomy(first)[0]) - lab(standard_anatomy(second)[0]))
        assert difference >= 25, f"{first} and {second} look alike (colour difference {difference:.0f})"


# --- the web app: one server for every check ------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``swinssl web --demo``: the real CT of ../shared/data (the demo CT is that file) and the demo organ model."""
    from web_harness import WebServer

    folder = tmp_path_factory.mktemp("viewing")
    for name in ("models", "runs", "cases"):
        (folder / name).mkdir()
    server = WebServer(folder, "--demo", "--models", str(folder / "models"), "--runs", str(folder / "runs"), "--cases", str(folder / "cases"))
    yield server
    server.stop()


def masks_in_order(path: Path) -> dict[str, np.ndarray]:
    """Each segment of a .seg.nrrd, in the file's order, as a boolean (K, J, I) array on the file's grid."""
    segmentation = slicerio.read_segmentation(str(path))
    voxels = np.asarray(segmentation["voxels"])
    layers = [voxels[..., segment["layer"]] if voxels.ndim == 4 else voxels for segment in segmentation["segments"]]
    return {segment["name"]: (layer == segment["labelValue"]).transpose(2, 1, 0)  # slicerio arrays are (I, J, K)
            for segment, layer in zip(segmentation["segments"], layers)}


def marks(page, view: str) -> dict:
    return page.evaluate(f"window.trame.state.get('{view}_marks')")


def view_box(page, view: str = "Red") -> dict:
    """Where a slice view is on the page (its marks cover it whole)."""
    return page.locator(f".swinssl-view-marks[data-view={view}]").bounding_box()


def pixel(page, x: float, y: float) -> float:
    """Grey value (0..255) the browser shows at page point (x, y), the mean of a 3 x 3 patch."""
    from io import BytesIO

    from PIL import Image

    image = np.asarray(Image.open(BytesIO(page.screenshot(clip={"x": x - 1, "y": y - 1, "width": 3, "height": 3}))).convert("L"), float)
    return float(image.mean())


def probe_at(page, x: float, y: float) -> dict:
    """The data probe after moving the mouse to (x, y): its reading once it has held still for 0.4 s."""
    page.mouse.move(x, y)
    time.sleep(0.4)
    previous = None
    for _ in range(40):
        probe = page.evaluate("window.trame.state.get('view_probe')")
        if probe == previous and probe["ijk"] is not None:
            return probe
        previous = probe
        time.sleep(0.4)
    raise AssertionError(f"the probe did not settle at ({x}, {y}): {probe}")


def soft_tissue_point(page, ct: np.ndarray) -> tuple[float, float, dict, tuple[float, float]]:
    """A point of the axial view over soft tissue (-100..100 HU), with the lowest and highest HU of its voxel's in-plane
    neighbours: the view draws it interpolated between them. (x, y, the probe's reading there, (lowest, highest))."""
    box = view_box(page)
    for fx, fy in ((0.45, 0.55), (0.5, 0.6), (0.4, 0.5), (0.55, 0.45), (0.5, 0.5), (0.45, 0.62), (0.6, 0.55), (0.35, 0.6)):
        x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
        probe = probe_at(page, x, y)
        i, j, k = probe["ijk"]
        around = ct[k, j - 1:j + 2, i - 1:i + 2]
        if -100 <= probe["value"] <= 100 and np.ptp(around) <= 80:
            return x, y, probe, (float(around.min()), float(around.max()))
    raise AssertionError("no point over soft tissue in the axial view")


def drawn_as(grey: float, hu_range: tuple[float, float], window_text: str) -> bool:
    """Whether a pixel's ``grey`` is what the window makes of a value in ``hu_range`` (give or take 12 of 255 for
    the image's JPEG encoding)."""
    window, level = (float(v) for v in re.match(r"W (-?\d+) L (-?\d+)", window_text).groups())
    low, high = (255 * float(np.clip((hu - (level - window / 2)) / window, 0, 1)) for hu in hu_range)
    return low - 12 <= grey <= high + 12


def wait_for_window(page, view: str, previous: str) -> str:
    """The view's window once it differs from ``previous`` and has held still for half a second (a drag has ended)."""
    seen, since = previous, time.monotonic()
    for _ in range(100):
        time.sleep(0.1)
        now = marks(page, view).get("window", "")
        if now != seen:
            seen, since = now, time.monotonic()
        elif now != previous and time.monotonic() - since > 0.5:
            return now
    raise AssertionError(f"the window of {view} stayed {previous!r} or never settled ({seen!r})")


def test_window_orientation_probe_and_crosshair_in_the_browser(page, demo, shared_data):
    from web_harness import wait_for_text

    page.goto(demo.url)

    wait_for_text(page, ".swinssl-case", "demo_ct", 60)
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "ct" / CT_NAME)))  # (K, J, I)
    for _ in range(50):  # the case's views get their marks once drawn
        if marks(page, "Red") and marks(page, "Green") and marks(page, "Yellow"):
            break
        time.sleep(0.2)

    # orientation: radiological convention in the axial view (patient's right on the left), each view's offset
    axial, coronal, sagittal = marks(page, "Red"), marks(page, "Green"), marks(page, "Yellow")
    assert (axial["left"], axial["right"], axial["top"], axial["bottom"]) == ("R", "L", "A", "P")
    assert (coronal["left"], coronal["right"], coronal["top"], coronal["bottom"]) == ("R", "L", "S", "I")
    assert {sagittal["top"], sagittal["bottom"]} == {"S", "I"} and {sagittal["left"], sagittal["right"]} == {"A", "P"}
    assert re.fullmatch(r"S -?\d+\.\d mm", axial["offset"]) and re.fullmatch(r"A -?\d+\.\d mm", coronal["offset"])
    assert page.locator(".swinssl-view-marks[data-view=Red] .swinssl-mark-left").inner_text() == "R"  # drawn over the view
    assert axial["window"] == "W 350 L 40"  # a CT opens in Slicer's CT-abdomen window

    # the probe reads the CT's own voxel value at the IJK it names
    time.sleep(2.0)  # the page fits its views once they have their size (app.VIEW_SIZE_SETTLE_SECONDS)
    x, y, probe, around = soft_tissue_point(page, ct)
    i, j, k = probe["ijk"]
    assert probe["value"] == ct[k, j, i] and f"IJK ({i}, {j}, {k}) · {ct[k, j, i]} HU" in probe["text"]
    assert page.locator(".swinssl-view-marks[data-view=Red] .swinssl-probe").inner_text() == probe["text"]

    # window/level: the pixel under the probe is drawn as the window says, before and after a left-button drag
    page.mouse.move(x + 120, y)  # the probe's text and the cursor away from the pixel
    time.sleep(1.0)
    shown = pixel(page, x, y)
    assert drawn_as(shown, around, axial["window"]), (shown, around, axial["window"])
    page.mouse.move(x, y - 100)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(x + 15 * step, y - 100)
        time.sleep(0.03)
    page.mouse.up()
    dragged = wait_for_window(page, "Red", axial["window"])
    assert marks(page, "Green")["window"] == dragged  # one volume, one window in every view
    page.mouse.move(x + 120, y)
    time.sleep(1.5)
    after = pixel(page, x, y)
    assert drawn_as(after, around, dragged), (after, around, dragged)
    page.locator(".swinssl-window-preset").click()
    page.locator(".v-list-item", has_text="CT lung").click()
    lung = wait_for_window(page, "Red", dragged)
    assert lung == "W 1400 L -500"
    time.sleep(1.5)
    in_lung_window = pixel(page, x, y)
    assert drawn_as(in_lung_window, around, lung), (in_lung_window, around, lung)
    assert abs(in_lung_window - shown) > 40  # soft tissue turns from mid-grey to near white: the check can fail
    page.locator(".swinssl-window-preset").click()
    page.locator(".v-list-item", has_text="CT abdomen").click()
    wait_for_window(page, "Red", lung)

    # linked crosshair: Shift + move in the axial view brings the coronal and sagittal views to that point
    page.keyboard.down("Shift")
    page.mouse.move(x - 30, y + 20)
    page.mouse.move(x - 31, y + 21)
    page.keyboard.up("Shift")
    point = probe_at(page, x - 31, y + 21)
    r, a = (float(v) for v in re.match(r"R (-?[\d.]+) A (-?[\d.]+)", point["text"]).groups())
    for _ in range(40):
        time.sleep(0.1)
        coronal_at, sagittal_at = float(marks(page, "Green")["offset"].split()[1]), float(marks(page, "Yellow")["offset"].split()[1])
        if abs(coronal_at - a) < 3.1 and abs(sagittal_at - r) < 3.1:
            break
    else:
        raise AssertionError(f"crosshair at R {r} A {a}: coronal {coronal_at}, sagittal {sagittal_at}")


# --- checks added to the journeys of test_web_journeys.py (which segment and paint already) -------------------
def check_the_statistics_match_the_engine(page, engine_result: Path) -> None:
    """After a segmentation of the real CT with the demo model: the statistics beside the result give each segment's
    volume as the engine counted it (``engine_result``: the engine's own .seg.nrrd of the same CT) within 0.1 %, with
    its mean ± SD in HU; the empty one (the model's known miss, the left kidney) is flagged; the probe names the
    segment that holds its voxel. Leaves the README's screenshot (window, letters, offsets, probe, statistics)."""
    from web_harness import screenshot

    page.wait_for_function("window.trame.state.get('seg_statistics').length === 6", timeout=30_000)
    rows = page.evaluate("window.trame.state.get('seg_statistics')")  # in segment order, as the engine's labels
    masks = masks_in_order(engine_result)
    spacing = np.prod(sitk.ReadImage(str(engine_result)).GetSpacing()[:3])
    assert len(rows) == len(masks) == len(DEMO_ORGANS)
    for row, mask in zip(rows, masks.values()):
        assert row["empty"] == (mask.sum() == 0), row
        if mask.sum():
            assert row["ml"] == pytest.approx(mask.sum() * spacing / 1000, rel=1e-3), row
    liver, kidney_left = (DEMO_ORGANS.index(name) for name in ("liver", "kidney_left"))
    assert rows[liver]["ml"] > 27 and rows[kidney_left]["empty"]
    assert page.locator(".swinssl-statistics-row").nth(kidney_left).inner_text().split()[-1] == "EMPTY"
    shown = page.locator(".swinssl-statistics-row").nth(liver).inner_text()
    assert re.search(r"\d+\.\d mL\s+-?\d+ ± \d+ HU", shown), shown

    box, found = view_box(page), None
    for step in range(12):
        reading = probe_at(page, box["x"] + box["width"] * (0.3 + 0.04 * step), box["y"] + box["height"] * 0.5)
        if reading["segments"]:
            found = reading
            break
    assert found is not None, "no segment under the probe along the axial view's middle row"
    i, j, k = found["ijk"]
    assert [index for index, mask in enumerate(masks.values()) if mask[k, j, i]] == [[row["name"] for row in rows].index(found["segments"][0])]
    page.locator(".swinssl-statistics").scroll_into_view_if_needed()
    screenshot(page, "web-viewing")


def statistics_and_window(page) -> tuple[list[dict], str]:
    """The statistics table (once the result's is there) and the axial view's window."""
    page.wait_for_function("window.trame.state.get('seg_statistics').length > 0", timeout=30_000)
    return page.evaluate("window.trame.state.get('seg_statistics')"), marks(page, "Red")["window"]


def check_the_statistics_follow_an_edit(page, before: tuple[list[dict], str]) -> None:
    """After a brush stroke on the first segment (``before``: :func:`statistics_and_window` until then): its volume grew
    in the table, and the stroke painted rather than changing the window (the active effect takes the left button)."""
    rows, window = before
    page.wait_for_function(f"window.trame.state.get('seg_statistics')[0].ml > {rows[0]['ml']}", timeout=30_000)
    assert marks(page, "Red")["window"] == window


def check_the_previews_are_windowed_and_turn(page) -> None:
    """Pretraining on a CT (training window -1000..1000 HU): the three preview views draw the crops in soft tissue
    -160..240 HU (0.42..0.62 of the crops' 0..1), as the engine's PNG does, and turn coronal and back to axial."""
    views = ("Original", "Masked", "Reconstruction")
    for _ in range(50):
        if all(marks(page, view).get("window") == "W 0.2 L 0.52" for view in views):
            break
        time.sleep(0.2)
    assert [marks(page, view).get("window") for view in views] == ["W 0.2 L 0.52"] * 3
    for orientation, top in (("Coronal", "S"), ("Axial", "A")):
        page.locator(".swinssl-preview-orientation").click()
        page.locator(".v-list-item", has_text=orientation).click()
        page.wait_for_function(f"['Original', 'Masked', 'Reconstruction'].every(v => (window.trame.state.get(v + '_marks') || {{}}).top === '{top}')",
                               timeout=15_000)

"""The web app's page logic without a browser (issue 26): what a failed model download tells the user to do, the
training chart's separate loss and Dice panels on a real MRML loss table, and the Train page's views and events
table on a real app (trame-slicer's scene, no server started)."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from web_harness import require_browser


def test_a_failed_download_says_what_to_do_instead(tmp_path):
    """The engine's own errors (no connection; an HTTP error) become advice that names the file, not its long address."""
    from swinssl.catalogue import CatalogueEntry
    from swinssl.io.download import DownloadError, download
    from swinssl_web.downloads import failure_advice

    long_path = "/" + "very-long-folder-name/" * 6 + "swin_unetr_btcv.zip"
    offline = CatalogueEntry("btcv", "http://127.0.0.1:9" + long_path, "monai-bundle", "Apache-2.0", "test")
    with pytest.raises(DownloadError) as refused:  # port 9 (discard): nothing listens there
        download(offline.url, tmp_path / "part", timeout=5)
    advice = failure_advice(offline, str(refused.value))
    assert advice == ("btcv was not downloaded: this server cannot reach 127.0.0.1 (no internet here?). Download swin_unetr_btcv.zip "
                      "on a computer that can, copy it to this server and use swinssl models import FOLDER (unzip it first).")
    weights = CatalogueEntry("encoder", offline.url.replace(".zip", ".pt"), "ssl-weights", "Apache-2.0", "test")
    assert "use swinssl finetune --init FILE" in failure_advice(weights, str(refused.value))

    files = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "empty")))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        missing = CatalogueEntry("btcv", f"http://127.0.0.1:{files.server_port}{long_path}", "monai-bundle", "Apache-2.0", "test")
        with pytest.raises(DownloadError) as not_found:
            download(missing.url, tmp_path / "part")
    finally:
        files.shutdown()
        files.server_close()
    advice = failure_advice(missing, str(not_found.value))
    assert advice.startswith("btcv was not downloaded: swin_unetr_btcv.zip: the server answered 404") and "very-long" not in advice


def test_the_chart_puts_dice_on_its_own_axis(mrml_scene, tmp_path):
    """A fine-tuning run's table (total loss, validation Dice every other step): the losses on their own axis, the Dice in
    a second panel on a fixed 0..1 axis, each labelled; a pretraining table (losses only) has one panel."""
    from swinssl_slicer.loss_table import append_rows, find_or_create
    from swinssl_web.loss_chart import HEIGHT, chart_from_table

    columns = ["total", "val_mean_dice"]
    table, _ = find_or_create(mrml_scene, tmp_path / "run", "finetune", columns)
    append_rows(table, columns, [(1, {"total": 3.0}), (2, {"total": 2.0, "val_mean_dice": 0.5}), (3, {"total": 1.5}),
                                 (4, {"total": 1.2, "val_mean_dice": 0.75})])
    loss, dice = chart_from_table(table.GetTable())["panels"]
    assert (loss["kind"], loss["axis_label"], [line["name"] for line in loss["series"]]) == ("loss", "Loss", ["total"])
    assert (loss["y_min"], loss["y_max"]) == (0.0, 3.0)  # the Dice values do not stretch the loss axis
    assert (dice["axis_label"], dice["y_min"], dice["y_max"]) == ("Validation Dice (0 to 1)", 0.0, 1.0)
    heights = [float(point.split(",")[1]) for point in dice["series"][0]["points"].split()]
    assert heights == [HEIGHT * 0.5, HEIGHT * 0.25] and dice["series"][0]["last"] == "0.75"  # two points, where validated

    pretrain, _ = find_or_create(mrml_scene, tmp_path / "pretrain", "pretrain", ["total", "rotation"])
    append_rows(pretrain, ["total", "rotation"], [(1, {"total": 2.0, "rotation": 1.0})])
    assert [panel["kind"] for panel in chart_from_table(pretrain.GetTable())["panels"]] == ["loss"]


def test_the_train_page_shows_no_empty_preview_views_and_one_run_of_events(tmp_path):
    """Fine-tuning writes no previews: the Train page keeps the case's views (not three black ones); pretraining shows
    the preview views. A new run's events table starts empty; a resumed run's keeps what it showed."""
    require_browser()  # trame-slicer
    from swinssl_web.app import PREVIEW_LAYOUT, SEGMENT_LAYOUT, SwinSSLWebApp, WebSettings

    app = SwinSSLWebApp(WebSettings(port=0, models=tmp_path / "models", runs=tmp_path / "runs", cases=tmp_path / "cases"))
    state = app.server.state
    layouts = []
    for page, kind in (("train", "pretrain"), ("train", "finetune"), ("segment", "pretrain")):
        state.page, state.train_kind = page, kind
        app.show_layout()  # what a change of either calls (the server that would call it is not started here)
        layouts.append(app.layout_logic.data.current_layout_id)
    assert layouts == [PREVIEW_LAYOUT, SEGMENT_LAYOUT, SEGMENT_LAYOUT]

    state.train_events = [{"step": 4, "event": "done", "detail": "finished"}]
    app.train.started("Resuming pretraining in run ...", 8, new_run=False)
    assert len(state.train_events) == 1 and state.train_total == 8
    app.train.started("Fine-tuning model m ...", 5)
    assert state.train_events == [] and state.train_total == 5
    assert state.train_steps == 1000 and state.seg_tune_steps == 50  # the Train and Segment pages' own step counts

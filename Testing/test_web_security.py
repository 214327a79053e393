"""SwinSSL Web on a hospital server: folders confined to the --data roots (``..`` and symlinks included),
uploads bounded and kept under their base names, and an access token required off loopback, for the
page, its files and the websocket alike."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from web_harness import WebServer, wait_for_text


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    (root / "ct").mkdir(parents=True)
    (root / "ct" / "scan.nrrd").write_bytes(b"NRRD0004\n")
    (root / "notes.txt").write_text("not a volume")
    os.symlink("/etc", root / "escape")
    os.symlink(root / "ct", root / "ct-link")  # a link that stays inside is fine
    return root


def test_data_roots_refuse_paths_outside(data_root, tmp_path):
    from swinssl_web.data_roots import DataRoots, OutsideDataRoots

    roots = DataRoots([data_root])
    assert [entry.name for entry in roots.list(None)] == ["data"]
    assert [entry.name for entry in roots.list(data_root)] == ["ct", "ct-link"]  # no escape link, no .txt
    assert roots.resolve(data_root / "ct-link" / "scan.nrrd") == (data_root / "ct" / "scan.nrrd")
    for outside in ("/etc/passwd", str(data_root / ".." / ".."), str(data_root / "escape" / "passwd"), "ct/scan.nrrd", str(tmp_path)):
        with pytest.raises(OutsideDataRoots):
            roots.resolve(outside)
    assert roots.parent(data_root) is None and roots.parent(data_root / "ct") == str(data_root)


def test_uploads_are_bounded_and_keep_base_names_only(tmp_path):
    from swinssl_web.uploads import UploadInbox, UploadTooLarge

    inbox = UploadInbox(limit_bytes=1000)
    with pytest.raises(ValueError, match="the upload was not started"):
        inbox.add_part(0, 0, {"name": "early.nrrd", "content": b"x"})
    inbox.begin()
    inbox.add_part(0, 0, {"name": "../../outside.nrrd", "content": b"x" * 300})
    inbox.add_part(0, 300, {"name": "../../outside.nrrd", "content": b"z" * 100})  # the file's second slice, appended
    inbox.add_part(1, 0, {"name": "dicom/1.dcm", "content": [b"a", b"b"]})
    inbox.add_part(2, 0, {"name": "other/1.dcm", "content": b"c"})  # the same base name from another folder
    folder = inbox.folder
    assert sorted(p.name for p in inbox.files()) == ["1.dcm", "1_1.dcm", "outside.nrrd"]
    assert (folder / "outside.nrrd").read_bytes() == b"x" * 300 + b"z" * 100 and (folder / "1.dcm").read_bytes() == b"ab"
    assert all(p.parent == folder for p in inbox.files()) and not (folder.parent.parent / "outside.nrrd").exists()
    assert oct(folder.stat().st_mode & 0o777) == "0o700"  # private to the server's user
    with pytest.raises(UploadTooLarge, match="big.nii.gz: the upload is larger than the server's limit"):
        inbox.add_part(3, 0, {"name": "big.nii.gz", "content": b"y" * 700})
    assert not folder.exists() and inbox.files() == []
    inbox.begin()
    inbox.add_part(0, 0, {"name": "scan.nrrd", "content": b"x" * 10})
    with pytest.raises(ValueError, match="scan.nrrd: a part of the file was lost on the way"):
        inbox.add_part(0, 20, {"name": "scan.nrrd", "content": b"x" * 10})  # a slice at the wrong place
    assert inbox.files() == []


def test_loopback_detection():
    from swinssl_web.access import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("no-such-host.invalid")


def test_a_page_cannot_reach_outside_the_data_roots_or_inject_options(page, browser, data_root, tmp_path):
    """What the page sends is the browser's to forge: paths outside the roots, and values that would become
    command-line options of the engine, are refused with a message; file names stay out of the server's log."""
    server = WebServer(tmp_path, "--data", str(data_root), "--models", str(tmp_path / "models"), "--runs", str(tmp_path / "runs"))
    try:
        page.goto(server.url)
        page.locator(".swinssl-segment-page .swinssl-entry").first.wait_for()
        refusals = [("swinssl_browse", "/etc", "outside the server's data folders"),
                    ("swinssl_browse", str(data_root / ".." / ".."), "outside the server's data folders"),
                    ("swinssl_browse", str(data_root / "escape"), "outside the server's data folders"),
                    ("swinssl_open", "/etc/passwd", "/etc/passwd: outside the server's data folders"),
                    ("swinssl_use_folder", "/etc", "outside the server's data folders")]
        for trigger, path, message in refusals:
            page.evaluate("([name, path]) => window.trame.trigger(name, [path])", [trigger, path])
            wait_for_text(page, ".swinssl-error", message, 10)
            page.evaluate("window.trame.state.set('error_message', '')")
        entries = page.locator(".swinssl-segment-page .swinssl-entry").all_inner_texts()
        assert not any("escape" in entry for entry in entries)

        forged = {"train_data": [{"path": str(data_root / "ct"), "name": "ct", "modality": "--out=/tmp/elsewhere"}], "train_swinfuse": True}
        page.evaluate("values => { for (const [key, value] of Object.entries(values)) window.trame.state.set(key, value); }", forged)
        page.evaluate("window.trame.trigger('swinssl_pretrain')")
        wait_for_text(page, ".swinssl-error", "modality '--out=/tmp/elsewhere' is not one of the choices offered", 10)
        page.evaluate("window.trame.state.set('train_preset', '--data=/etc')")
        page.evaluate("window.trame.state.set('train_swinfuse', false)")
        page.evaluate("window.trame.trigger('swinssl_pretrain')")
        wait_for_text(page, ".swinssl-error", "preset '--data=/etc' is not one of the choices offered", 10)
        page.evaluate("window.trame.state.set('train_init', '/etc/passwd')")
        page.evaluate("window.trame.trigger('swinssl_finetune')")
        wait_for_text(page, ".swinssl-error", "initial weights '/etc/passwd' is not one of the choices offered", 10)
        page.evaluate("window.trame.state.set('seg_model', '/etc')")
        wait_for_text(page, ".swinssl-error", "choose one of the listed models", 10)
        assert not list((tmp_path / "runs").glob("*")) and not Path("/tmp/elsewhere").exists()  # nothing was started

        patient_file = tmp_path / "Doe_John_1950.nii.gz"
        patient_file.write_bytes(b"not a volume" * 50)
        page.locator(".swinssl-upload input[type=file]").set_input_files(str(patient_file))
        wait_for_text(page, ".swinssl-error", "Doe_John_1950.nii.gz: unreadable", 30)
        check_a_second_page_watches_only(page, browser, server, data_root)
    finally:
        server.stop()
    logs = server.log.read_text(encoding="utf-8") + server.output.read_text(encoding="utf-8")
    assert "Doe_John" not in logs and "passwd" not in logs and "Traceback" not in logs


def check_a_second_page_watches_only(page, browser, server, data_root) -> None:
    """Issue 26: the server holds one case and one engine. A second page is told so and watches: its controls and views
    are inert and what it sends anyway is refused, without an error in the first page; when the first page closes,
    the second one takes over."""
    second = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    second.goto(server.url)
    assert "one page works on it at a time. This page can watch only" in second.locator(".swinssl-watching").inner_text(timeout=30_000)
    assert second.locator(".swinssl-segment-page").evaluate("element => element.inert")
    assert second.locator(".swinssl-views").evaluate("element => element.inert")
    assert page.locator(".swinssl-watching").count() == 0 and not page.locator(".swinssl-views").evaluate("element => element.inert")
    page.evaluate("window.trame.state.set('error_message', '')")
    second.evaluate("path => window.trame.trigger('swinssl_browse', [path])", str(data_root / "ct"))
    page.wait_for_timeout(1000)
    assert page.evaluate("window.trame.state.get('browse_folder')") is None  # refused: the first page's view is as it was
    assert page.locator(".swinssl-error").count() == 0
    page.close()
    second.locator(".swinssl-watching").wait_for(state="detached", timeout=10_000)
    assert not second.locator(".swinssl-segment-page").evaluate("element => element.inert")
    second.evaluate("path => window.trame.trigger('swinssl_browse', [path])", str(data_root / "ct"))
    wait_for_text(second, ".swinssl-segment-page .swinssl-browser", "scan.nrrd", 10)
    second.context.close()


def test_on_loopback_other_sites_and_rebound_names_are_refused(data_root, tmp_path):
    """Without a token, a page of another site (Origin) and a foreign name pointed at 127.0.0.1 (Host: DNS
    rebinding) cannot reach the server; the page itself can."""
    server = WebServer(tmp_path, "--data", str(data_root))
    try:
        port = int(server.url.split(":")[2].split("/")[0])
        assert http_status("127.0.0.1", port, "/index.html") == 200
        assert http_status("127.0.0.1", port, "/index.html", {"Host": f"rebound.example:{port}"}) == 403
        assert websocket_status("127.0.0.1", port) == 101
        assert websocket_status("127.0.0.1", port, origin=f"http://127.0.0.1:{port}") == 101
        assert websocket_status("127.0.0.1", port, origin="https://evil.example") == 403
    finally:
        server.stop()


def test_off_loopback_every_request_needs_the_token(page, data_root, tmp_path):
    server = WebServer(tmp_path, "--host", "0.0.0.0", "--token", "s3cret-token", "--data", str(data_root))
    try:
        assert server.url.endswith("/?token=s3cret-token") and socket.gethostname() in server.url  # a name others can reach
        port = int(server.url.split(":")[2].split("/")[0])
        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/index.html", "/?token=wrong", "/trame_slicer_2.0.0/chunk_loader.js"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=10)
            assert refused.value.code == 403 and b"access token" in refused.value.read()
        cookie = f"swinssl_token_{port}"
        assert websocket_status("127.0.0.1", port) == 403
        assert websocket_status("127.0.0.1", port, f"{cookie}=wrong") == 403
        assert websocket_status("127.0.0.1", port, f"swinssl_token_1={'s3cret-token'}") == 403  # another port's cookie
        assert websocket_status("127.0.0.1", port, f"{cookie}=s3cret-token") == 101
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/?token=s3cret-token")
        response = connection.getresponse()
        set_cookie = response.getheader("Set-Cookie")
        assert response.status == 302 and response.getheader("Location") == "/"
        assert set_cookie.startswith(f"{cookie}=s3cret-token") and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        connection.close()

        page.goto(f"{base}/?token=s3cret-token")
        page.locator(".swinssl-tab-segment").wait_for()
        assert "token" not in page.url  # the cookie carries it from here on
        page.locator(".swinssl-segment-page .swinssl-entry").first.wait_for()  # the websocket connected: server state reached the page
    finally:
        server.stop()


def http_status(host: str, port: int, path: str, headers: dict | None = None) -> int:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", path, headers=headers or {})
    status = connection.getresponse().status
    connection.close()
    return status


def websocket_status(host: str, port: int, cookie: str | None = None, origin: str | None = None) -> int:
    """Status of a websocket handshake on /ws (101: switched protocols, i.e. connected)."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    if cookie:
        headers["Cookie"] = cookie
    if origin:
        headers["Origin"] = origin
    connection.request("GET", "/ws", headers=headers)
    status = connection.getresponse().status
    connection.close()
    return status


def test_web_without_the_extra_says_how_to_install_it():
    import subprocess
    import sys

    code = "import sys; sys.modules['trame_slicer'] = None; from swinssl.cli import main; sys.exit(main(['web']))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert completed.stderr.strip() == "swinssl web: needs the web extra: pip install 'swinssl[web]' (or: bash scripts/setup.sh --web)"


def test_scene_download_holds_the_case_only(tmp_path, shared_data):
    """The .mrb a user downloads leaves out training previews and loss tables (they may show other patients);
    opening another case lets go of the previous one's segmentation."""
    import zipfile

    import numpy as np
    import SimpleITK as sitk
    import vtk

    from swinssl_web.app import SwinSSLWebApp, WebSettings

    root = tmp_path / "data"
    root.mkdir()
    ct = root / "case.nii.gz"
    ct.write_bytes((shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz").read_bytes())
    previews = {}
    for kind in ("original", "masked", "reconstruction"):
        previews[kind] = tmp_path / f"other_patient_{kind}.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8), np.float32)), str(previews[kind]))
    app = SwinSSLWebApp(WebSettings(data=[root], port=0, models=tmp_path / "models", cases=tmp_path / "cases"))
    app.open_server_path(str(ct))
    app.train.training.load_preview(previews, step=1)
    table = app.slicer_app.scene.AddNewNodeByClass("vtkMRMLTableNode", "SwinSSL pretrain losses")
    table.SetAttribute("SwinSSL.RunFolder", str(tmp_path / "run"))
    table.GetTable().AddColumn(vtk.vtkFloatArray())
    segmentation = app.slicer_app.segmentation_editor.active_segmentation_node
    app.slicer_app.segmentation_editor.add_empty_segment()

    bundle = tmp_path / "scene.mrb"
    bundle.write_bytes(app.segment.scene_bytes())
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        mrml = next(archive.read(name).decode() for name in names if name.endswith(".mrml"))
    assert "case" in mrml and "vtkMRMLSegmentationNode" in mrml
    assert "SwinSSL preview" not in mrml and "losses" not in mrml and not any("other_patient" in name for name in names)
    assert all(node.GetSaveWithScene() for node in app.train.training.preview_nodes().values())  # as they were

    app.open_server_path(str(ct))  # another case: the editor lets go of the removed segmentation
    assert segmentation.GetScene() is None and app.slicer_app.segmentation_editor.active_segmentation_node is not segmentation
    assert [node.GetName() for node in app.segment.case_volumes()] == ["case"]  # reopened under its own name, not case_1
    assert app.server.state.seg_download_stem == "case"  # the downloads' and training-set files' name
    with pytest.raises(ValueError, match="nothing to save yet"):
        app.segment.segmentation_bytes()

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
    inbox.add([{"name": "../../outside.nrrd", "content": b"x" * 400}, {"name": "dicom/1.dcm", "content": [b"a", b"b"]}])
    folder = inbox.folder
    assert sorted(p.name for p in inbox.files()) == ["1.dcm", "outside.nrrd"]
    assert all(p.parent == folder for p in inbox.files()) and not (folder.parent.parent / "outside.nrrd").exists()
    assert oct(folder.stat().st_mode & 0o777) == "0o700"  # private to the server's user
    with pytest.raises(UploadTooLarge, match="big.nii.gz: the upload is larger than the server's limit"):
        inbox.add([{"name": "big.nii.gz", "content": b"y" * 700}])
    assert not folder.exists() and inbox.files() == []


def test_loopback_detection():
    from swinssl_web.access import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("no-such-host.invalid")


def test_a_page_cannot_browse_outside_the_data_roots(page, data_root, tmp_path):
    server = WebServer(tmp_path, "--data", str(data_root))
    try:
        page.goto(server.url)
        page.locator(".swinssl-segment-page .swinssl-entry").first.wait_for()
        for outside in ("/etc", str(data_root / ".." / ".."), str(data_root / "escape")):
            page.evaluate("path => window.trame.trigger('swinssl_browse', [path])", outside)
            wait_for_text(page, ".swinssl-error", "outside the server's data folders", 10)
            page.evaluate("window.trame.state.set('error_message', '')")
        page.evaluate("path => window.trame.trigger('swinssl_open', [path])", "/etc/passwd")
        wait_for_text(page, ".swinssl-error", "/etc/passwd: outside the server's data folders", 10)
        entries = page.locator(".swinssl-segment-page .swinssl-entry").all_inner_texts()
        assert not any("escape" in entry for entry in entries)
    finally:
        server.stop()
    assert "passwd" not in server.log.read_text()  # nothing of the refused request in the server's log


def test_off_loopback_every_request_needs_the_token(page, data_root, tmp_path):
    server = WebServer(tmp_path, "--host", "0.0.0.0", "--token", "s3cret-token", "--data", str(data_root))
    try:
        assert server.url.endswith("/?token=s3cret-token") and socket.gethostname() in server.url  # a name others can reach
        port = server.url.split(":")[2].split("/")[0]
        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/index.html", "/?token=wrong"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=10)
            assert refused.value.code == 403 and b"access token" in refused.value.read()
        assert websocket_status("127.0.0.1", int(port)) == 403
        assert websocket_status("127.0.0.1", int(port), "swinssl_token=wrong") == 403
        assert websocket_status("127.0.0.1", int(port), "swinssl_token=s3cret-token") == 101

        page.goto(f"{base}/?token=s3cret-token")
        page.locator(".swinssl-tab-segment").wait_for()
        assert "token" not in page.url  # the cookie carries it from here on
        assert page.locator(".swinssl-segment-page .swinssl-entry").count() == 1  # the websocket connected: server state reached the page
    finally:
        server.stop()


def websocket_status(host: str, port: int, cookie: str | None = None) -> int:
    """Status of a websocket handshake on /ws (101: switched protocols, i.e. connected)."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    if cookie:
        headers["Cookie"] = cookie
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

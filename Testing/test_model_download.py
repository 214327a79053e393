"""swinssl models download: a catalogue entry fetched from a local HTTP server on 127.0.0.1 (no network here),
resumed after an interruption, checked against its hash, refused when the hash or the archive is wrong, and
installed so that `swinssl segment` and `finetune --init` find it by name."""

import hashlib
import json
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from swinssl.catalogue import load_catalogue
from swinssl.network import build_swin_unetr
from test_models import write_bundle

BUNDLE_ZIP = "swin_unetr_btcv_segmentation_v0.5.6.zip"  # the model-zoo file name; the layout inside is the real one


class FileServer:
    """Serves ``files`` with Range support; ``drop_after[path]`` bytes cut the first answer short, ``status[path]`` forces an error."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path in server.status:
                    self.send_error(server.status[self.path], "Internal Server Error")
                    return
                if self.path not in server.files:
                    self.send_error(404)
                    return
                data = server.files[self.path]
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server.drop_after.pop(self.path, None)
                self.wfile.write(data[start:cut] if cut is not None else data[start:])
                if cut is not None:
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    files = FileServer()
    yield files
    files.httpd.shutdown()
    files.httpd.server_close()


def bundle_zip(tmp_path: Path, extra_member: str | None = None) -> bytes:
    """A zip laid out like the model-zoo's: one top folder with configs/, models/model.pt and LICENSE."""
    bundle = write_bundle(tmp_path / "bundle-src" / "swin_unetr_btcv_segmentation")
    (bundle / "LICENSE").write_text("Apache License 2.0 (test copy)")
    archive = tmp_path / BUNDLE_ZIP
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(bundle.rglob("*")):
            if file.is_file():
                out.write(file, f"swin_unetr_btcv_segmentation/{file.relative_to(bundle)}")
        if extra_member:
            out.writestr(extra_member, "escaped")
    return archive.read_bytes()


def catalogue(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(entries))
    return path


def bundle_entry(url: str, data: bytes, **changes) -> dict:
    entry = {"name": "tiny-btcv", "url": url, "format": "monai-bundle", "hash": {"algorithm": "sha1", "value": hashlib.sha1(data).hexdigest()},
             "size": len(data), "licence": "Apache-2.0 (test)", "source": "test fixture", "citation": "test"}
    entry.update(changes)
    return entry


def download(catalogue_path: Path, models: Path, name: str = "tiny-btcv", *extra: str):
    return run_cli("models", "download", name, "--catalogue", str(catalogue_path), "--models-dir", str(models), *extra)


def test_download_verifies_installs_and_segment_uses_the_model_by_name(tmp_path, server, shared_data):
    data = bundle_zip(tmp_path)
    server.files["/zoo/" + BUNDLE_ZIP] = data
    models = tmp_path / "models"
    result = download(catalogue(tmp_path, [bundle_entry(server.url("/zoo/" + BUNDLE_ZIP), data)]), models)
    assert result.returncode == 0, result.stderr
    meta = json.loads((models / "tiny-btcv" / "model.json").read_text(encoding="utf-8"))
    assert meta["name"] == "tiny-btcv" and [label["name"] for label in meta["labels"]] == ["spleen", "rkid", "lkid"]
    provenance = meta["training"]["download"]
    assert provenance["hash"] == {"algorithm": "sha1", "value": hashlib.sha1(data).hexdigest(), "verified": True}
    assert provenance["licence"] == "Apache-2.0 (test)" and provenance["url"].endswith(BUNDLE_ZIP)
    assert not list(models.glob(".swinssl-tmp-*")) and not list((models / ".downloads").iterdir())  # staging and download cleared
    segmented = run_cli("segment", "--model", "tiny-btcv", "--input", str(shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz"),
                        "--output", str(tmp_path / "out.seg.nrrd"), "--device", "cpu", env={**os.environ, "SWINSSL_MODELS": str(models)})
    assert segmented.returncode == 0, segmented.stderr
    assert (tmp_path / "out.seg.nrrd").is_file()
    again = download(catalogue(tmp_path, [bundle_entry(server.url("/zoo/" + BUNDLE_ZIP), data)]), models)
    assert again.returncode == 1 and "already installed" in again.stderr


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path, server):
    data = bundle_zip(tmp_path)
    path = "/zoo/" + BUNDLE_ZIP
    server.files[path] = data
    server.drop_after[path] = len(data) * 2 // 5
    listing = catalogue(tmp_path, [bundle_entry(server.url(path), data)])
    models = tmp_path / "models"
    first = download(listing, models)
    assert first.returncode == 1 and "run the same command again to resume" in first.stderr and "Traceback" not in first.stderr
    partial = models / ".downloads" / f"{BUNDLE_ZIP}.part"
    assert partial.stat().st_size == len(data) * 2 // 5 and not (models / "tiny-btcv").exists()
    second = download(listing, models)
    assert second.returncode == 0, second.stderr
    assert server.requests[-1] == (path, f"bytes={len(data) * 2 // 5}-")  # only the rest was asked for
    assert (models / "tiny-btcv" / "model.json").is_file() and not partial.exists()


def test_a_wrong_hash_is_refused_and_nothing_is_installed(tmp_path, server):
    data = bundle_zip(tmp_path)
    server.files["/zoo/" + BUNDLE_ZIP] = data
    wrong = bundle_entry(server.url("/zoo/" + BUNDLE_ZIP), data, hash=None, sha256="0" * 64)
    models = tmp_path / "models"
    result = download(catalogue(tmp_path, [wrong]), models)
    assert result.returncode == 1 and "not the published file" in result.stderr and hashlib.sha256(data).hexdigest() in result.stderr
    assert [p.name for p in models.iterdir()] == [".downloads"] and not list((models / ".downloads").iterdir())


def test_a_file_of_another_size_than_the_catalogue_says_is_refused_naming_both_sizes(tmp_path, server):
    data = bundle_zip(tmp_path)
    server.files["/zoo/" + BUNDLE_ZIP] = data
    models = tmp_path / "models"
    result = download(catalogue(tmp_path, [bundle_entry(server.url("/zoo/" + BUNDLE_ZIP), data, size=len(data) + 1)]), models)
    assert result.returncode == 1 and f"{len(data)} bytes received, the catalogue says {len(data) + 1}" in result.stderr
    assert "Traceback" not in result.stderr and [p.name for p in models.iterdir()] == [".downloads"]
    assert not list((models / ".downloads").iterdir())


def test_available_lists_each_entry_with_its_state_hash_check_and_licence(tmp_path, server):
    data = bundle_zip(tmp_path)
    server.files["/zoo/" + BUNDLE_ZIP] = data
    unverified = {"name": "tiny-encoder", "url": server.url("/weights/model_swinvit.pt"), "format": "ssl-weights", "hash": None,
                  "licence": "not stated", "source": "test fixture"}
    listing = catalogue(tmp_path, [bundle_entry(server.url("/zoo/" + BUNDLE_ZIP), data), unverified])
    models = tmp_path / "models"
    before = run_cli("models", "available", "--catalogue", str(listing), "--models-dir", str(models))
    assert before.returncode == 0, before.stderr
    assert "tiny-btcv  [monai-bundle, , not installed, SHA1 checked]" in before.stdout
    assert "tiny-encoder  [ssl-weights, , not installed, no published hash]" in before.stdout and "licence: not stated" in before.stdout
    assert download(listing, models).returncode == 0
    after = run_cli("models", "available", "--catalogue", str(listing), "--models-dir", str(models))
    assert "tiny-btcv  [monai-bundle, , installed, SHA1 checked]" in after.stdout


def test_an_archive_member_escaping_its_folder_is_refused(tmp_path, server):
    data = bundle_zip(tmp_path, extra_member="../../escaped.txt")
    server.files["/zoo/" + BUNDLE_ZIP] = data
    models = tmp_path / "models"
    result = download(catalogue(tmp_path, [bundle_entry(server.url("/zoo/" + BUNDLE_ZIP), data)]), models)
    assert result.returncode == 1 and "outside the extraction folder; refused" in result.stderr
    assert not (models / "tiny-btcv").exists() and not list(models.glob(".swinssl-tmp-*"))
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_server_error_is_reported_in_one_line(tmp_path, server):
    path = "/zoo/" + BUNDLE_ZIP
    server.status[path] = 500
    result = download(catalogue(tmp_path, [bundle_entry(server.url(path), b"x")]), tmp_path / "models")
    assert result.returncode == 1 and f"{server.url(path)}: the server answered 500" in result.stderr and "Traceback" not in result.stderr


def test_weights_without_a_published_hash_need_consent_and_then_serve_as_init(tmp_path, server):
    torch.manual_seed(0)
    weights = tmp_path / "model_swinvit.pt"
    torch.save({"state_dict": build_swin_unetr(1, 2, 12).state_dict()}, weights)
    server.files["/weights/model_swinvit.pt"] = weights.read_bytes()
    entry = {"name": "tiny-encoder", "url": server.url("/weights/model_swinvit.pt"), "format": "ssl-weights", "hash": None,
             "licence": "not stated", "source": "test fixture"}
    listing = catalogue(tmp_path, [entry])
    models = tmp_path / "models"
    refused = download(listing, models, "tiny-encoder")
    assert refused.returncode == 1 and "--allow-unverified" in refused.stderr and server.requests == []  # refused before any request
    installed = download(listing, models, "tiny-encoder", "--allow-unverified")
    assert installed.returncode == 0, installed.stderr
    record = json.loads((models / "tiny-encoder" / "weights.json").read_text(encoding="utf-8"))
    assert record["hash"] == {"algorithm": "sha256", "value": hashlib.sha256(weights.read_bytes()).hexdigest(), "verified": False}
    assert record["layout"] == "swinunetr" and (models / "tiny-encoder" / "model_swinvit.pt").is_file()
    listed = run_cli("models", "list", "--models-dir", str(models))
    assert "tiny-encoder" in listed.stdout and "(--init)" in listed.stdout
    from swinssl.cli_types import init_source

    os.environ["SWINSSL_MODELS"] = str(models)
    try:
        assert init_source("tiny-encoder") == str(models / "tiny-encoder" / "model_swinvit.pt")
    finally:
        del os.environ["SWINSSL_MODELS"]
    # Issue 25 item 12: no model list shows weights, so the faces' catalogue marks them and says where they are used; the
    # folder itself (what Pretrain's 'Initialise from' browses to) is a valid start.
    from swinssl.models import list_packages
    from swinssl.weights import weights_file_of
    from swinssl_slicer.catalogue_logic import CatalogueLogic

    assert list_packages(models) == [] and weights_file_of(models / "tiny-encoder") == models / "tiny-encoder" / "model_swinvit.pt"
    faces = CatalogueLogic(models_folder=models, catalogue=listing)
    weights_entry = faces.entries()[0]
    assert faces.label(weights_entry) == "tiny-encoder [weights for pretraining/fine-tuning] (installed)"
    assert "not in the model list" in faces.describe(weights_entry) and str(models / "tiny-encoder") in faces.describe(weights_entry)


def test_the_built_in_catalogue_names_real_sources_with_their_published_hashes():
    entries = {entry.name: entry for entry in load_catalogue()}
    btcv = entries["btcv-swin-unetr"]
    assert btcv.format == "monai-bundle" and btcv.hash_algorithm == "sha1" and len(btcv.hash_value) == 40
    assert btcv.url.endswith("swin_unetr_btcv_segmentation_v0.5.6.zip") and len(btcv.segments) == 13
    assert entries["monai-ssl-50k"].hash_algorithm == "sha256" and len(entries["monai-ssl-50k"].hash_value) == 64
    assert entries["tang2022-ssl-encoder"].hash_algorithm is None  # none is published; the download asks for consent
    assert all(entry.licence and entry.source and entry.citation for entry in entries.values())


def test_the_real_btcv_bundle_configuration_downloads_into_a_package_with_slicer_names(tmp_path, server):
    """The model zoo's own inference.json and metadata.json (v0.5.6, Testing/data/model_zoo_btcv) with random weights
    of the real shape (feature 48, 14 outputs) in a zip laid out like the release: the package gets the bundle's
    13 organs with Slicer terminology, its spacing, window and ROI, and the legacy patch-merging order of MONAI 1.4."""
    configs = Path(__file__).parent / "data" / "model_zoo_btcv" / "configs"
    archive = tmp_path / BUNDLE_ZIP
    weights = tmp_path / "model.pt"
    torch.manual_seed(0)
    torch.save(build_swin_unetr(1, 14, 48).state_dict(), weights)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for config in sorted(configs.iterdir()):
            out.write(config, f"swin_unetr_btcv_segmentation/configs/{config.name}")
        out.write(weights, "swin_unetr_btcv_segmentation/models/model.pt")
        out.writestr("swin_unetr_btcv_segmentation/LICENSE", "Apache License 2.0 (test copy)")
    weights.unlink()
    data = archive.read_bytes()
    server.files["/zoo/" + BUNDLE_ZIP] = data
    listing = catalogue(tmp_path, [bundle_entry(server.url("/zoo/" + BUNDLE_ZIP), data, name="btcv-swin-unetr")])
    result = download(listing, tmp_path / "models", "btcv-swin-unetr")
    assert result.returncode == 0, result.stderr
    from swinssl.package import load_package

    package = load_package(tmp_path / "models" / "btcv-swin-unetr")
    assert package.labels.names == ["spleen", "Right Kidney", "Left Kideny", "Gallbladder", "Esophagus", "Liver", "Stomach", "Aorta",
                                    "IVC", "Portal and Splenic Veins", "Pancreas", "Right adrenal gland", "Left adrenal gland"]
    codes = {label.name: (label.terminology or {}).get("type", [None, None])[1] for label in package.labels.labels}
    assert codes["Left Kideny"] == "64033007" and codes["Liver"] == "10200004" and codes["IVC"] == "64131007"
    assert codes["Portal and Splenic Veins"] is None  # not in Slicer's lists: no code is invented
    assert package.spacing == (1.5, 1.5, 2.0) and package.roi == 96 and package.feature_size == 48
    assert package.channels[0].window == (-175.0, 250.0) and package.patch_merging == "legacy"

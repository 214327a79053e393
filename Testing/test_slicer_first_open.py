"""Issue 25 item 14: a first open of SwinSSL Segment gives a radiologist something to click: the demo CT in Sample Data,
the demo organ model in the model list, and one line saying what to do first. On a real MRML scene (slicer-core) and
with the calls Slicer's Sample Data module makes, as read in its source."""

import ast
import hashlib
import json
import shutil
import urllib.request

from PIL import Image

from conftest import REPO

# Modules/Scripted/SampleData/SampleData.py, identical in Slicer v5.8.1, v5.10.0 and v5.12.3: the parameters of
# SampleDataLogic.registerCustomSampleDataSource; SampleDataSource turns a str ``uris`` into one-element lists of
# every other field, so with one file each of them is one str.
REGISTER_PARAMETERS = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader", "thumbnailFileName",
                       "loadFileTypes", "loadFiles", "loadFileProperties", "checksums", "loadFileType"}
# Base/Python/slicer/util.py extractAlgoAndDigest (same three tags): "<algo>:<digest>", algo and digest length.
CHECKSUM_DIGEST_LENGTHS = {"SHA256": 64, "SHA512": 128, "MD5": 32}
THUMBNAIL_SIZE = (260, 280)  # "approximately 260x280 pixels" (Utilities/Templates/Modules/Scripted/TemplateKey.py)


def test_the_demo_ct_is_registered_as_sample_data_fetches_and_loads_it(mrml_scene, tmp_path):
    from swinssl_slicer.mrml_io import read_volume
    from swinssl_slicer.sample_data import demo_ct_source

    thumbnail = REPO / "SwinSSLSegment" / "Resources" / "Icons" / "SwinSSLDemoCT.png"
    source = demo_ct_source(thumbnail)
    assert set(source) <= REGISTER_PARAMETERS
    assert all(isinstance(source[key], str) for key in ("uris", "fileNames", "nodeNames", "checksums"))
    algorithm, digest = source["checksums"].split(":")
    assert len(digest) == CHECKSUM_DIGEST_LENGTHS[algorithm]
    cached = tmp_path / source["fileNames"]
    urllib.request.urlretrieve(source["uris"], cached)  # SampleDataLogic.downloadFile's own call, then its checksum test
    assert hashlib.new(algorithm, cached.read_bytes()).hexdigest() == digest
    volume = read_volume(mrml_scene, cached, source["nodeNames"])
    assert volume.GetName() == "SwinSSL demo CT" and volume.GetImageData().GetDimensions() == (122, 101, 30)  # (I, J, K)
    with Image.open(source["thumbnailFileName"]) as image:
        assert image.format == "PNG" and image.size == THUMBNAIL_SIZE


def test_the_model_list_offers_the_bundled_demo_model_after_the_installed_ones(mrml_scene, tmp_path):
    from swinssl.models import BUNDLED_MODELS
    from swinssl_slicer.segment_logic import SegmentationLogic

    models = tmp_path / "models"
    models.mkdir()
    demo = BUNDLED_MODELS / "demo_organs"
    slicer_face = SegmentationLogic(mrml_scene, models_folder=models, bundled=True)
    try:
        assert [p.path for p in slicer_face.available_models()] == [demo]  # nothing installed: the demo model
        assert slicer_face.choose_model("") == str(demo)  # and it is selected, so Segment works out of the box
        assert SegmentationLogic(mrml_scene, models_folder=models).available_models() == []  # the web app lists its own

        other = shutil.copytree(demo, models / "abdomen")
        meta = json.loads((other / "model.json").read_text(encoding="utf-8"))
        (other / "model.json").write_text(json.dumps({**meta, "name": "abdomen"}))
        assert [p.name for p in slicer_face.available_models()] == ["abdomen", "demo-organs"]
        assert slicer_face.choose_model("") == str(other)  # an installed model comes first

        installed_demo = shutil.copytree(demo, models / "demo_organs")  # an installed model of the same name hides the bundled one
        assert [p.path for p in slicer_face.available_models()] == [other, installed_demo]
    finally:
        slicer_face.close()


def test_the_first_step_names_the_registered_sample_and_the_offered_model(mrml_scene, tmp_path):
    from swinssl_slicer.sample_data import demo_ct_source, first_step
    from swinssl_slicer.segment_logic import SegmentationLogic

    offered = SegmentationLogic(mrml_scene, models_folder=tmp_path, bundled=True)
    try:
        demo_model = offered.available_models()[-1].name
    finally:
        offered.close()
    line = first_step()
    assert "\n" not in line and f"'{demo_ct_source()['sampleName']}'" in line and f"'{demo_model}'" in line
    # The Segment module's wiring, as Slicer's scripted-module template does it (TemplateKey.py, v5.10.0 and v5.12.3):
    # registration once the application has started, the model list with the bundled model, the line in the panel.
    tree = ast.parse((REPO / "SwinSSLSegment" / "SwinSSLSegment.py").read_text(encoding="utf-8"))
    calls = {ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "slicer.app.connect('startupCompleted()', registerSampleData)" in calls
    assert "SampleData.SampleDataLogic.registerCustomSampleDataSource(**demo_ct_source(thumbnail))" in calls
    assert any(call.startswith("SegmentationLogic(slicer.mrmlScene") and "bundled=True" in call for call in calls)
    assert "first_step()" in calls

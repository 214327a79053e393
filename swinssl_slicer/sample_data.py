"""What a first open of SwinSSL Segment offers: the demo CT the extension carries, registered with Slicer's Sample Data
module, and the one line that says what to do first. No Qt or Slicer import here; the module file passes
:func:`demo_ct_source` to ``SampleData.SampleDataLogic.registerCustomSampleDataSource`` when Slicer has started.

Verified in Slicer v5.8.1, v5.10.0 and v5.12.3 (Modules/Scripted/SampleData/SampleData.py, identical there):
registerCustomSampleDataSource(category, sampleName, uris, fileNames, nodeNames, customDownloader, thumbnailFileName,
loadFileTypes, loadFiles, loadFileProperties, checksums, loadFileType); a click copies each URI into Slicer's cache with
``urllib.request.urlretrieve`` (a ``file://`` URI included), checks ``checksums`` ("SHA256:<64 hex digits>",
slicer.util.extractAlgoAndDigest) and loads the file as ``nodeNames``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from swinssl_slicer.engine import engine_root, ensure_engine_on_path

ensure_engine_on_path()

from swinssl.models import bundled_packages  # noqa: E402  (reads model.json files only)

DEMO_CT_CATEGORY = "SwinSSL"
DEMO_CT_SAMPLE = "SwinSSL demo CT"


def demo_ct_path() -> Path:
    """The real abdominal CT the engine carries (TotalSegmentator test data, Apache-2.0; 30 slices)."""
    return engine_root() / "swinssl" / "resources" / "demo_ct.nii.gz"


def demo_ct_source(thumbnail: Path | None = None) -> dict:
    """Keyword arguments of ``registerCustomSampleDataSource`` for the demo CT. The checksum makes Sample Data copy the
    file again when an update of the extension changes it, instead of reusing its cached copy."""
    path = demo_ct_path()
    return {
        "category": DEMO_CT_CATEGORY,
        "sampleName": DEMO_CT_SAMPLE,
        "uris": path.as_uri(),
        "fileNames": "SwinSSL-demo-CT.nii.gz",  # the name in Slicer's cache, where every extension's samples lie side by side
        "nodeNames": DEMO_CT_SAMPLE,
        "checksums": f"SHA256:{hashlib.sha256(path.read_bytes()).hexdigest()}",
        "thumbnailFileName": str(thumbnail) if thumbnail else None,
    }


def first_step() -> str:
    """One line for a first open: load the demo CT, choose the demo model, click Segment."""
    demo_model = bundled_packages()[0][0].name
    return (f"First time? Load '{DEMO_CT_SAMPLE}' in the Sample Data module ({DEMO_CT_CATEGORY} section), choose the model "
            f"'{demo_model}' and click Segment.")

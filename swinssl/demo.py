"""``swinssl demo``: both journeys on the bundled abdominal CT, in a few minutes on a laptop CPU.

1. The researcher's: a short, real pretraining that continues from a small model pretrained for longer
   on the same CT (carried in ``resources/``), so its inpainting previews already follow the anatomy.
2. The radiologist's: a small model package (carried too) segments the CT into named organs, written as
   a Slicer ``.seg.nrrd`` and shown in an overlay PNG.

What the carried weights were trained on, and for how long: ``resources/ATTRIBUTION.md``.
"""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path

from swinssl.events import EventLog, read_events
from swinssl.summary import duration
from swinssl.training.config import PretrainConfig
from swinssl.training.pretrain import run_pretraining
from swinssl.training.signals import EXIT_OK

REAL_RUN_HINT = """\
To pretrain for real (paper settings: feature size 48, ROI 96, 1.5 mm, many CTs, a GPU):
  swinssl pretrain --data /path/to/ct_folders --out runs/ssl --preset ct --spacing 1.5 1.5 2 \\
      --roi 96 --feature-size 48 --batch-size 2 --steps 100000 --preview-every 1000 --events runs/ssl/events.jsonl
On several GPUs:  torchrun --nproc_per_node 4 -m swinssl pretrain ...   (same options)
"""


def resource(name: str) -> Path:
    return Path(str(files("swinssl") / "resources" / name))


def demo_volume() -> Path:
    """Path of the bundled CT (see swinssl/resources/ATTRIBUTION.md)."""
    return resource("demo_ct.nii.gz")


def demo_config(out: Path, steps: int, events: str | None) -> PretrainConfig:
    """The carried model's settings (feature 12, ROI 64, 1.5 mm, upsample decoder), continued from it."""
    return PretrainConfig(
        data=[str(demo_volume())],
        out=str(out),
        events=events,
        cache_dir=str(out / "cache"),
        preset="ct",
        spacing=(1.5, 1.5, 1.5),
        roi=64,
        feature_size=12,
        decoder="upsample",
        init=str(resource("demo_ssl.safetensors")),
        batch_size=2,
        steps=steps,
        lr=2e-4,  # a pretrained model: a gentle continuation, not a fresh start
        warmup_steps=max(1, steps // 10),
        checkpoint_every=max(1, steps // 2),
        preview_every=max(1, steps // 2),
        device="auto",
    )


def segment_demo_ct(out: Path, show_progress: bool) -> tuple[Path, Path, dict[str, float]]:
    """Segments the demo CT with the carried package; returns (.seg.nrrd, overlay PNG, {organ: mL})."""
    import SimpleITK as sitk

    from swinssl.inference.segment import SegmentOptions, segment_files
    from swinssl.labels.overlay import overlay_png
    from swinssl.labels.segmentation_file import read_seg_nrrd
    from swinssl.package import load_package

    package = load_package(resource("demo_organs"))
    events = EventLog(out / "segment_events.jsonl", echo_warnings=True)
    try:
        segmentation = segment_files([demo_volume()], out / "demo_ct.seg.nrrd", package, SegmentOptions(show_progress=show_progress), events)[0]
        volumes = events.last["done"]["volume_ml"]
    finally:
        events.close()
    labels = read_seg_nrrd(segmentation)[0]
    overlay = overlay_png(sitk.ReadImage(str(demo_volume())), labels, package.labels, out / "segmentation.png")
    return segmentation, overlay, volumes


def run_demo(out: Path, steps: int = 16, events: str | None = None, show_progress: bool = False) -> int:
    """Runs the demo into ``out`` and prints where everything is."""
    started = time.monotonic()
    events_path = events or str(out / "events.jsonl")
    if out.exists() and (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out} already holds a run; pass another --out or remove it")
    status = run_pretraining(demo_config(out, steps, events_path), show_progress=show_progress, print_summary=True)
    if status != EXIT_OK:
        return status
    previews = [e for e in (read_events(events_path) if events_path != "-" else []) if e["event"] == "preview"]
    for event in previews:
        print(f"  preview      step {event['step']}: {event['paths']['png']}")
    segmentation, overlay, volumes = segment_demo_ct(out, show_progress)
    print(f"\nSegmented the demo CT with the demo organ model: {segmentation}")
    print(f"  overlay      {overlay}")
    for organ, millilitres in volumes.items():
        print(f"  {organ:<12} {millilitres:8.1f} mL")
    print(f"\nSwinSSL demo finished in {duration(time.monotonic() - started)}. Both carried models were trained on this one CT "
          "(see swinssl/resources/ATTRIBUTION.md): they show the pipeline, not accuracy on other scans.")
    print("\n" + REAL_RUN_HINT)
    return EXIT_OK

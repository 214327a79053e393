"""``swinssl demo``: both journeys on the bundled abdominal CT, in minutes on a CPU.

1. Pretraining: a short, real run of the rotation and inpainting tasks from random weights, with inpainting
   previews measured inside the holes against a no-learning interpolation (ten CPU steps show the pipeline and
   the losses moving, not a reconstruction of anatomy). The contrastive task is off: see :data:`CONTRAST_OFF`.
2. Segmentation: a small organ model carried in ``resources/demo_organs`` segments the CT into named
   organs, written as ``.seg.nrrd`` and drawn over the CT in a PNG. It was trained on this one CT (see
   ``resources/ATTRIBUTION.md``): it shows the tool working, it is not a model to use on patients.
"""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path

from swinssl.events import EventLog, read_events
from swinssl.preview_text import describe
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

CONTRAST_OFF = ("the contrastive term is off: the demo's crops all come from one 30-slice slab and overlap almost entirely, "
                "so a step has no usable negatives and the loss would sit at ln(2B-1) = ln 3 throughout")


def demo_resource(name: str) -> Path:
    return Path(str(files("swinssl") / "resources" / name))


def demo_volume() -> Path:
    """Path of the bundled CT (see swinssl/resources/ATTRIBUTION.md)."""
    return demo_resource("demo_ct.nii.gz")


def demo_config(out: Path, steps: int, events: str | None) -> PretrainConfig:
    """A small model (feature 12, ROI 64, upsample head) and the paper's rotation and inpainting weights (contrast
    off, see :data:`CONTRAST_OFF`), so that the demo runs in minutes on 2 CPU cores."""
    return PretrainConfig(
        data=[str(demo_volume())],
        out=str(out),
        events=events,
        cache_dir=str(out / "cache"),
        preset="ct",
        spacing=(4.5, 4.5, 1.5),  # a 64-voxel crop covers the whole 30-slice slab, most of its width: the previews show the abdomen
        roi=64,
        feature_size=12,
        decoder="upsample",  # learns visibly faster than deconv in a few steps (see README)
        batch_size=2,
        loss_contrast=0.0,
        steps=steps,
        lr=5e-4,
        warmup_steps=max(1, steps // 10),
        checkpoint_every=max(1, steps // 2),
        preview_every=max(1, steps // 2),
        device="auto",
    )


def segment_demo_ct(out: Path, events_path: str) -> dict:
    """Segments the demo CT with the carried organ model; writes ``demo_ct_organs.seg.nrrd`` and the overlay
    ``demo_ct_organs.png`` into ``out``. Returns the outputs and each organ's volume in millilitres."""
    from swinssl.inference.segment import SegmentOptions, segment_files
    from swinssl.package import load_package

    package = load_package(demo_resource("demo_organs"))
    events = EventLog(None if events_path == "-" else events_path, echo_warnings=True)
    try:
        segmentation, overlay = segment_files([demo_volume()], out / "demo_ct_organs.seg.nrrd", package, SegmentOptions(), events,
                                              overlay=out / "demo_ct_organs.png")
        return {"segmentation": segmentation, "overlay": overlay, "volume_ml": events.last["done"]["volume_ml"]}
    finally:
        events.close()


def run_demo(out: Path, steps: int = 10, events: str | None = None, show_progress: bool = False) -> int:
    """Runs the demo into ``out`` and prints where everything is."""
    started = time.monotonic()
    events_path = events or str(out / "events.jsonl")
    if out.exists() and (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out} already holds a run; pass another --out or remove it")
    print(f"1/2  Pretraining (rotation, inpainting) on the demo CT; {CONTRAST_OFF}", flush=True)
    status = run_pretraining(demo_config(out, steps, events_path), show_progress=show_progress, print_summary=True)
    if status != EXIT_OK:
        return status
    print("\n2/2  Segmenting the demo CT into organs", flush=True)
    segmentation = segment_demo_ct(out, events_path)
    previews = [e for e in read_events(events_path) if e["event"] == "preview"] if events_path != "-" else []
    print(f"\nSwinSSL demo finished in {duration(time.monotonic() - started)}.")
    for event in previews:
        print(f"  preview      step {event['step']}: {event['paths']['png']}\n"
              f"               inside the holes: reconstruction {describe(event['holes'], event['unit'])}; "
              f"interpolation (no learning) {describe(event['baseline'], event['unit'])}")
    print(f"  organs       {segmentation['segmentation']}")
    print(f"  overlay      {segmentation['overlay']}")
    for name, millilitres in segmentation["volume_ml"].items():
        print(f"    {name:<14} {millilitres:8.1f} ml")
    print(f"  events       {events_path}")
    print("The organ model was trained on this CT alone (swinssl/resources/ATTRIBUTION.md): a demonstration, not a clinical model.\n"
          f"The previews after {steps} CPU steps show the pipeline, not a reconstruction: a network has learnt to inpaint when it "
          "beats the interpolation inside the holes, which takes a long pretraining (a GPU).")
    print("\n" + REAL_RUN_HINT)
    return EXIT_OK

"""``swinssl demo``: a short, real pretraining on the bundled abdominal CT, with previews."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from swinssl.events import read_events
from swinssl.training.config import PretrainConfig
from swinssl.training.pretrain import run_pretraining
from swinssl.training.signals import EXIT_OK

REAL_RUN_HINT = """\
To pretrain for real (paper settings: feature size 48, ROI 96, 1.5 mm, many CTs, a GPU):
  swinssl pretrain --data /path/to/ct_folders --out runs/ssl --preset ct --spacing 1.5 1.5 2 \\
      --roi 96 --feature-size 48 --batch-size 2 --steps 100000 --preview-every 1000 --events runs/ssl/events.jsonl
On several GPUs:  torchrun --nproc_per_node 4 -m swinssl pretrain ...   (same options)
"""


def demo_volume() -> Path:
    """Path of the bundled CT (see swinssl/resources/ATTRIBUTION.md)."""
    return Path(str(files("swinssl") / "resources" / "demo_ct.nii.gz"))


def demo_config(out: Path, steps: int, events: str | None) -> PretrainConfig:
    """Small model (feature 12, ROI 64, 1.5 mm, upsample decoder) so that the demo runs in minutes on 2 CPU cores."""
    return PretrainConfig(
        data=[str(demo_volume())],
        out=str(out),
        events=events,
        cache_dir=str(out / "cache"),
        preset="ct",
        spacing=(1.5, 1.5, 1.5),
        roi=64,
        feature_size=12,
        decoder="upsample",  # learns visibly faster than deconv in 16 steps (see README)
        batch_size=2,
        steps=steps,
        lr=5e-4,
        warmup_steps=max(1, steps // 10),
        checkpoint_every=max(1, steps // 2),
        preview_every=max(1, steps // 2),
        device="auto",
    )


def run_demo(out: Path, steps: int = 16, events: str | None = None, show_progress: bool = False) -> int:
    """Runs the demo into ``out`` and prints where everything is."""
    events_path = events or str(out / "events.jsonl")
    if out.exists() and (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out} already holds a run; pass another --out or remove it")
    status = run_pretraining(demo_config(out, steps, events_path), show_progress=show_progress, print_summary=True)
    if status != EXIT_OK:
        return status
    log = read_events(events_path) if events_path != "-" else []
    previews = [e for e in log if e["event"] == "preview"]
    print("\nSwinSSL demo finished.")
    for event in previews:
        print(f"  preview      step {event['step']}: {event['paths']['png']}")
    print(f"  events       {events_path}")
    print("\n" + REAL_RUN_HINT)
    return EXIT_OK

"""Command line: ``swinssl pretrain | finetune | compare-init | align | segment | evaluate | models | demo`` (``python -m swinssl`` and ``torchrun -m swinssl`` too).

Exit statuses: 0 finished, 1 error (message on stderr and as an ``error`` event), 2 bad command
line, 3 stopped by SIGTERM/SIGINT or ``--stop-at`` after writing a checkpoint (``--resume`` goes on).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Callable

from swinssl import __version__
from swinssl.cli_types import (
    backend_name,
    dicom_output,
    existing_folder,
    existing_path,
    feature_size,
    file_output,
    finite_float,
    fraction,
    init_source,
    model_folder,
    non_negative_float,
    non_negative_int,
    output_folder,
    png_output,
    positive_float,
    positive_int,
    roi_size,
    segmentation_output,
    tcp_port,
    volume_output,
)
from swinssl.package import BACKENDS
from swinssl.training.signals import EXIT_ERROR, EXIT_USAGE

STOP_FILE_HELP = ("stop as on SIGTERM once this file exists, checked after every step: the signal-free stop channel "
                  "the Slicer modules and the web app use (works on Windows and through launchers)")

NOT_SETTINGS = ("command", "handler", "resume", "overwrite", "debug")  # command-line switches that are not run settings
# Choices of options whose modules import torch, written out so that parsing stays light (a test checks they agree):
PATCH_MERGING_CHOICES = ("legacy", "v1.5")  # = swinssl.weights.PATCH_MERGING_ORDERS
CUTOUT_STYLE_CHOICES = ("reference", "exact")  # = swinssl.ssl.augment.CUTOUT_STYLES
CROP_SAMPLING_CHOICES = ("posneg", "classes")  # = swinssl.finetune.sampler.CROP_SAMPLING
PRECISION_CHOICES = ("auto", "fp32", "bf16")  # = swinssl.inference.segment.PRECISIONS
PATCH_MERGING_HELP = ("order of MONAI's 3-D patch-merging slots the weights were trained with: legacy (MONAI <= 1.4) or v1.5; "
                      "default: what the weights record, else the rule for their source (see the README)")
INPAINT_LOSS_CHOICES = ("all", "masked")  # = swinssl.ssl.losses.INPAINT_LOSSES
DECODER_CHOICES = ("vae", "plain_deconv", "large_kernel_deconv", "deconv", "upsample", "swinunetr")  # = swinssl.ssl.model.DECODERS (no torch import here)
OVERWRITE_HELP = "replace the run or model in --out (it is kept aside until the new run's first checkpoint is written)"

if TYPE_CHECKING:
    from swinssl.events import EventLog


def _add_data_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """The volumes and their preprocessing: shared by ``pretrain`` and ``cache`` (same options, same cache entries)."""
    data = parser.add_argument_group("data")
    data.add_argument("--data", nargs="+", metavar="DIR", type=existing_path, required=required,
                      help="folders (searched recursively) or files: NIfTI, NRRD, MetaImage, DICOM series")
    data.add_argument("--cache-dir", help="preprocessed-volume cache (default: $SWINSSL_CACHE or ~/.cache/swinssl/volumes)")
    data.add_argument("--cache-workers", type=positive_int,
                      help="processes preparing volumes, per rank (default: this node's cores / its ranks, at most 8)")
    data.add_argument("--preset", choices=("ct", "mr", "pet", "none"), help="intensity preset (default ct: -1000..1000 HU -> 0..1)")
    data.add_argument("--modality", nargs="+", choices=("ct", "mr", "pet"),
                      help="one per --data entry: tags its volumes (batches balance the modalities) and applies that modality's preset")
    data.add_argument("--window", nargs=2, type=finite_float, metavar=("LOW", "HIGH"), help="custom intensity window -> 0..1")
    data.add_argument("--pet-max-suv", type=positive_float, help="pet preset: clip at this SUV (default: a percentile)")
    data.add_argument("--pet-percentile", type=positive_float, help="pet preset: clip percentile when no SUV is given (default 99.9)")
    data.add_argument("--spacing", nargs=3, type=positive_float, metavar=("X", "Y", "Z"), help="resample to this spacing in mm")
    data.add_argument("--no-orient", dest="orient_ras", action="store_const", const=False, help="keep the stored axis order (default: RAS)")
    data.add_argument("--no-crop-foreground", dest="crop_foreground", action="store_const", const=False)
    data.add_argument("--in-channels", type=positive_int, help="image channels (default 1)")
    data.add_argument("--channel-presets", nargs="+", choices=("ct", "mr", "pet", "none"),
                      help="one intensity preset per channel of multi-channel volumes, e.g. ct pet for `swinssl align` output")
    data.add_argument("--roi", type=roi_size, help="cubic crop edge in voxels, divisible by 32 (default 96); volumes are padded to it")


def _add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option defaults to None so that only what the user typed overrides a config."""
    _add_data_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--feature-size", type=feature_size, help="Swin embedding size, multiple of 12 (default 48)")
    model.add_argument("--projection-dim", type=positive_int, help="contrastive projection size (default 512)")
    model.add_argument("--decoder", choices=DECODER_CHOICES,
                       help="inpainting head: our normalised deconv (default) or upsample stages, or the reference code's vae "
                            "(its default; --roi 64 or more), plain_deconv or large_kernel_deconv, or swinunetr: SwinUNETR's whole "
                            "decoder, DAE-style (--roi 64 or more; fine-tuning then gets encoder and decoder; see the README)")
    model.add_argument("--inpaint-loss", choices=INPAINT_LOSS_CHOICES,
                       help="inpainting L1 over every voxel (all, default, the published setting) or the cut-out voxels only (masked: DAE, SimMIM)")
    model.add_argument("--gradient-checkpointing", action="store_const", const=True)
    model.add_argument("--init", type=init_source, help="start from these weights instead of random ones: a pretraining model, run "
                       "or checkpoint (ours or the reference script's: encoder and heads), or an encoder in any supported layout; "
                       "matching tensors are loaded")
    model.add_argument("--patch-merging", choices=PATCH_MERGING_CHOICES, help=PATCH_MERGING_HELP)
    model.add_argument("--swinfuse", action="store_const", const=True,
                       help="SwinFUSE: cross-view domain-invariance module and KDE/JSD density matching between modalities")
    model.add_argument("--jsd-weight", type=non_negative_float, help="weight w of the density term, L = ... + w * JSD (default 0.1)")
    model.add_argument("--kde-sigma", type=positive_float, help="KDE bandwidth (default: median pairwise feature distance per batch)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--steps", type=positive_int, help="total steps (default 1000)")
    optim.add_argument("--batch-size", type=positive_int, help="crops per step and process; each gives two views (default 2)")
    optim.add_argument("--lr", type=positive_float, help="peak learning rate (default 4e-4)")
    optim.add_argument("--weight-decay", type=non_negative_float, help="AdamW weight decay (default 0.1)")
    optim.add_argument("--warmup-steps", type=non_negative_int, help="linear warmup (default: 10%% of steps, at most 500)")
    optim.add_argument("--grad-clip", type=positive_float, help="gradient-norm clip (default 1.0)")
    optim.add_argument("--temperature", type=positive_float, help="NT-Xent temperature (default 0.5)")
    optim.add_argument("--loss-weights", nargs=3, type=non_negative_float, metavar=("ROT", "CONTRAST", "INPAINT"), help="default 1 1 1")
    optim.add_argument("--no-rotation", dest="rotate", action="store_const", const=False,
                       help="do not rotate the views (inpainting and contrast only; needs a rotation weight of 0)")
    optim.add_argument("--cutout-max-fraction", type=fraction, help="largest share of a view hidden by cutout (default 0.3)")
    optim.add_argument("--cutout-style", choices=CUTOUT_STYLE_CHOICES,
                       help="reference (default): the reference code's noise boxes then, with probability (n-1)/n, boxes pasted "
                            "from another crop of the batch; exact: noise boxes until exactly the drawn share is hidden")
    optim.add_argument("--no-amp", dest="amp", action="store_const", const=False, help="fp32 on the GPU too")
    optim.add_argument("--deterministic", action="store_const", const=True, help="deterministic GPU kernels (always on for the CPU)")
    optim.add_argument("--seed", type=int)
    optim.add_argument("--device", choices=("auto", "cpu", "cuda"))
    run = parser.add_argument_group("run control")
    run.add_argument("--out", required=True, type=output_folder, help="run folder: config, checkpoint, encoder, previews")
    run.add_argument("--events", help="JSON Lines event file, or - for stdout")
    run.add_argument("--checkpoint-every", type=positive_int, help="default 100")
    run.add_argument("--preview-every", type=non_negative_int, help="write an inpainting preview every K steps (default 0: never)")
    run.add_argument("--log-every", type=positive_int, help="progress event every K steps (default 1)")
    run.add_argument("--stop-at", type=positive_int, help="stop as on SIGTERM after this step (for time-limited cluster jobs)")
    run.add_argument("--stop-file", help=STOP_FILE_HELP)
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    run.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def _pretrain_config(args: argparse.Namespace):
    from swinssl.training.config import RUN_CONTROL_FIELDS, PretrainConfig

    given = {k: v for k, v in vars(args).items() if v is not None and k not in NOT_SETTINGS + ("loss_weights",)}
    if args.loss_weights is not None:
        given.update(zip(("loss_rotation", "loss_contrast", "loss_inpaint"), args.loss_weights))
    if not args.resume:
        if not args.data:
            raise SystemExit("swinssl pretrain: error: --data is required (unless --resume)")
        return PretrainConfig(**given)
    saved_path = Path(args.out) / "config.json"
    if not saved_path.exists():
        raise FileNotFoundError(f"cannot resume: {saved_path} does not exist")
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    saved.setdefault("cutout_style", "exact")  # a run from before the reference cutout became the default keeps its own
    saved = PretrainConfig.from_dict(saved).to_dict()
    changed = [k for k, v in given.items() if k not in RUN_CONTROL_FIELDS + ("out",) and _normalised(v) != _normalised(saved.get(k))]
    if changed:
        raise ValueError(f"cannot change {', '.join('--' + k.replace('_', '-') for k in changed)} when resuming {args.out}")
    saved.update(given)
    saved.update(stop_at=given.get("stop_at"), stop_file=given.get("stop_file"))
    return PretrainConfig.from_dict(saved)


def _normalised(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from swinssl.training.run_folder import PRETRAIN_MARKERS, check_run_folder

    check_run_folder(Path(args.out), PRETRAIN_MARKERS, args.resume, args.overwrite, _is_rank_zero())  # before torch is imported
    with _run_lock(args.out, "pretrain"):
        from swinssl.training.pretrain import run_pretraining

        return run_pretraining(_pretrain_config(args), resume=args.resume, show_progress=sys.stderr.isatty(), overwrite=args.overwrite,
                               print_summary=True)


def _is_rank_zero() -> bool:
    """False in torchrun's processes other than rank 0 (they start the same command into the same folder)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _run_lock(out: str, command: str) -> AbstractContextManager:
    """The run folder's lock (:class:`~swinssl.training.run_folder.RunFolderLock`), taken by rank 0 alone."""
    from contextlib import nullcontext

    from swinssl.training.run_folder import RunFolderLock

    return RunFolderLock(Path(out), command) if _is_rank_zero() else nullcontext()


def _cmd_cache(args: argparse.Namespace) -> int:
    """Prepares the cache of ``pretrain`` with the same options, e.g. on every node before a cluster job."""
    import os
    import time

    import torch

    from swinssl.events import EventLog
    from swinssl.summary import duration
    from swinssl.training.config import PretrainConfig
    from swinssl.training.data import default_cache_dir
    from swinssl.training.distributed import Runtime
    from swinssl.training.pretrain import load_data_groups

    started = time.monotonic()
    rank = args.rank if args.rank is not None else int(os.environ.get("RANK", "0"))
    world_size = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world_size:
        raise ValueError(f"--rank {rank} must be below --world-size {world_size}")
    given = {k: v for k, v in vars(args).items() if v is not None and k not in NOT_SETTINGS + ("rank", "world_size")}
    config = PretrainConfig(**given)
    events = EventLog(config.events if rank == 0 else None, echo_warnings=rank == 0)
    try:
        loaded = load_data_groups(config, events, Runtime(rank, world_size, torch.device("cpu")), sys.stderr.isatty())
        events.emit("done", volumes=len(loaded.volumes), skipped=loaded.skipped, built=loaded.built, seconds=round(time.monotonic() - started, 2))
    except Exception as error:
        events.emit("error", message=str(error), kind=type(error).__name__)
        raise
    finally:
        events.close()
    print(f"{len(loaded.volumes)} volume(s) ready in {config.cache_dir or default_cache_dir()} ({loaded.built} prepared by this process, "
          f"{loaded.skipped} file(s) skipped) in {duration(time.monotonic() - started)}")
    return 0


def _cmd_web(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("trame_slicer") is None:
        print("swinssl web: needs the web extra: pip install 'swinssl[web]' (or: bash scripts/setup.sh --web)", file=sys.stderr)
        return EXIT_USAGE
    from swinssl_web.access import is_loopback, new_token

    token = args.token or (None if is_loopback(args.host) else new_token())
    data = [Path(folder) for folder in args.data]
    resources = Path(__file__).parent / "resources"
    from swinssl_web.app import WebSettings, serve

    return serve(WebSettings(
        host=args.host, port=args.port, data=data + ([resources] if args.demo else []),
        models=Path(args.models) if args.models else None, runs=Path(args.runs) if args.runs else None,
        cases=Path(args.cases) if args.cases else None, token=token, upload_limit_mb=args.upload_limit_mb,
        open_file=resources / "demo_ct.nii.gz" if args.demo else None, extra_models=[resources / "demo_organs"] if args.demo else [],
        catalogue=Path(args.catalogue) if args.catalogue else None))


def _cmd_demo(args: argparse.Namespace) -> int:
    from swinssl.training.run_folder import check_run_folder

    check_run_folder(Path(args.out), (), False, False)  # another demo writing there
    with _run_lock(args.out, "demo"):
        from swinssl.demo import run_demo

        return run_demo(Path(args.out), steps=args.steps, events=args.events, show_progress=sys.stderr.isatty())


def _with_event_log(path: str | None, work: Callable[[EventLog], list[Path]]) -> int:
    """Runs ``work(events)``, which returns the files it wrote, and prints them; an exception becomes
    an ``error`` event and then propagates (the CLI turns it into exit status 1)."""
    from swinssl.events import EventLog

    events = EventLog(path, echo_warnings=True)
    try:
        written = work(events)
    except Exception as error:
        events.emit("error", message=str(error), kind=type(error).__name__)
        raise
    finally:
        events.close()
    print("\n".join(str(p) for p in written))
    return 0


def _cmd_align(args: argparse.Namespace) -> int:
    from swinssl.align import align_folders

    def align(events: EventLog) -> list[Path]:
        return align_folders(args.data, Path(args.out), events, register=args.register, affine=args.affine)

    return _with_event_log(args.events, align)


def _segment_outputs(args: argparse.Namespace) -> list[Path]:
    """Every file ``segment`` writes: the segmentation (+ the label table beside a NIfTI), the overlay, the confidence map."""
    output = Path(args.output)
    outputs = [output]
    if output.name.lower().endswith((".nii", ".nii.gz")):
        from swinssl.labels.segmentation_file import label_table_path

        outputs.append(label_table_path(output))
    return outputs + [Path(path) for path in (args.overlay, args.confidence, args.dicom_seg) if path]


def _check_segment_files(args: argparse.Namespace) -> None:
    """Before torch is imported: an existing output is kept unless --overwrite, and an input whose header says it is a
    segmentation, a label map or impossibly large is refused."""
    if args.dicom_seg and importlib.util.find_spec("highdicom") is None:
        raise ValueError("--dicom-seg needs highdicom, which this Python lacks: pip install 'swinssl[dicom]'")
    if args.dicom_seg and not Path(args.input[0]).is_dir():
        raise ValueError(f"{args.input[0]} is not a DICOM series folder: --dicom-seg writes a DICOM Segmentation that references the "
                         "DICOM series it was computed on; give the series' folder as the first --input, or leave --dicom-seg out")
    existing = [path for path in _segment_outputs(args) if path.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} already exists (an earlier result, maybe another patient's): add --overwrite to "
                              "replace it, or give another --output")
    from swinssl.io.reader import check_header

    for path in map(Path, args.input):
        if path.is_file():
            check_header(path)


def _cmd_segment(args: argparse.Namespace) -> int:
    import time

    _check_segment_files(args)
    from swinssl.inference.input_fit import InputMismatchError
    from swinssl.inference.plausibility import flag_lines
    from swinssl.inference.segment import SegmentOptions, segment_files
    from swinssl.package import load_package
    from swinssl.summary import duration

    started = time.monotonic()

    def segment(events: EventLog) -> list[Path]:
        package = load_package(args.model)
        options = SegmentOptions(overlap=args.overlap, fast=args.fast, device=args.device, batch_size=args.batch_size, register=args.register,
                                 show_progress=sys.stderr.isatty(), precision=args.precision, allow_mismatch=args.allow_mismatch,
                                 **({"backend": args.backend} if args.backend else {}))
        written = segment_files([Path(p) for p in args.input], Path(args.output), package, options, events,
                                Path(args.overlay) if args.overlay else None, Path(args.confidence) if args.confidence else None,
                                args.confidence_threshold, Path(args.dicom_seg) if args.dicom_seg else None)
        done = events.last.get("done", {})
        print(f"Segmented with {package.name} in {duration(time.monotonic() - started)}:", file=sys.stderr)
        confidence = done.get("confidence", {})
        for name, millilitres in done.get("volume_ml", {}).items():
            sure = (f"  confidence {confidence[name]['mean']:.2f}, {confidence[name]['below']:.0%} below {args.confidence_threshold:g}"
                    if name in confidence else "")
            print(f"  {name:<24} {millilitres:>10.1f} mL{sure}", file=sys.stderr)
        for line in flag_lines(done["plausibility"]) if "plausibility" in done else []:
            print(f"  {line}", file=sys.stderr)
        return written

    try:
        return _with_event_log(args.events, segment)
    except InputMismatchError as error:  # the event log has the reason alone; the terminal also gets the way out
        raise ValueError(f"{error}; to segment it anyway, add --allow-mismatch") from None


def _cmd_finetune(args: argparse.Namespace) -> int:
    from swinssl.training.run_folder import FINETUNE_MARKERS, check_run_folder

    check_run_folder(Path(args.out), FINETUNE_MARKERS, args.resume, args.overwrite, _is_rank_zero())  # before torch is imported
    from swinssl.finetune.config import FINETUNE_RUN_CONTROL, FinetuneConfig
    from swinssl.finetune.train import run_finetune
    from swinssl.preprocessing.intensity import CT_WINDOW

    given = {k: v for k, v in vars(args).items() if v is not None and k not in NOT_SETTINGS}
    if args.resume:
        saved_path = Path(args.out) / "training" / "config.json"
        if not saved_path.exists():
            raise FileNotFoundError(f"cannot resume: {saved_path} does not exist")
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
        if saved.get("window") is None and saved.get("preset", "ct") == "ct":
            saved["window"] = list(CT_WINDOW)  # a run from before -175..250 HU became the fine-tuning default keeps its window
        changed = [k for k in given if k not in FINETUNE_RUN_CONTROL + ("out",) and _normalised(given[k]) != _normalised(saved.get(k))]
        if changed:
            raise ValueError(f"cannot change {', '.join('--' + k.replace('_', '-') for k in changed)} when resuming {args.out}")
        saved.update(given)
        saved.update(stop_at=given.get("stop_at"), stop_file=given.get("stop_file"))
        config = FinetuneConfig.from_dict(saved)
    else:
        from swinssl.finetune.parent import check_fits_parent, inherit_from_parent, parent_package

        config = FinetuneConfig(**inherit_from_parent(given))  # from a model package: its input settings unless given
        parent = parent_package(config.init)
        if parent is not None:
            check_fits_parent(config, parent)  # before any case is read (the engine checks again)
    with _run_lock(args.out, "finetune"):
        return run_finetune(config, resume=args.resume, show_progress=sys.stderr.isatty(), overwrite=args.overwrite, print_summary=True)


def _cmd_compare_init(args: argparse.Namespace) -> int:
    from swinssl.training.run_folder import check_run_folder

    check_run_folder(Path(args.out), ("compare_init.json",), False, args.overwrite)
    from swinssl.finetune.compare import compare_init
    from swinssl.finetune.config import FinetuneConfig

    given = {k: v for k, v in vars(args).items()
             if v is not None and k not in NOT_SETTINGS + ("pretrained", "counts", "init", "ood_data", "ood_preset")}
    with _run_lock(args.out, "compare-init"):
        rows = compare_init(FinetuneConfig(**given), args.pretrained, args.counts, Path(args.out), args.ood_data, args.ood_preset)
    print((Path(args.out) / "compare_init.md").read_text(encoding="utf-8"), end="")
    return 0 if rows else 1


def _cmd_models(args: argparse.Namespace) -> int:
    from swinssl.models import models_dir

    root = Path(args.models_dir) if args.models_dir else models_dir()
    if args.action == "import":
        if not args.source:
            raise ValueError("swinssl models import needs a SOURCE")
        return _with_event_log(args.events, lambda events: [_import_model(args, root, events)])
    if args.action in ("download", "available"):
        return _models_catalogue(args, root)
    return _list_models(root)


def _import_model(args: argparse.Namespace, root: Path, events: EventLog) -> Path:
    """``models import SOURCE``: a ``progress`` event before the weights are loaded into the network (torch and MONAI:
    seconds to tens of seconds), then ``done`` with the installed folder (what a face's Import... follows)."""
    from swinssl.models import import_model

    events.emit("progress", stage="import", message=f"reading {Path(args.source).name} and checking its weights")
    folder = import_model(Path(args.source), root, args.name, args.patch_merging)
    events.emit("done", outputs={"model": folder})
    return folder


def _list_models(root: Path) -> int:
    from swinssl.model_download import WEIGHTS_JSON
    from swinssl.models import list_packages, unshadowed_bundled

    packages = list_packages(root)
    weights = sorted(root.glob(f"*/{WEIGHTS_JSON}")) if root.is_dir() else []
    bundled = unshadowed_bundled(packages)  # an installed one of that name comes first
    rows = [("NAME", "VERSION", "INPUTS", "SEGMENTS", "FOLDER")]
    rows += [(p.name, p.version, "+".join(c.modality for c in p.channels), str(len(p.labels.labels)), str(p.path)) for p in packages]
    rows += [(meta.parent.name, "-", "encoder", "(--init)", str(meta.parent)) for meta in weights]
    rows += [(p.name, p.version, "+".join(c.modality for c in p.channels), str(len(p.labels.labels)), f"{p.path}  [bundled; {note}]")
             for p, note in bundled]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    if not packages and not weights:
        print(f"\nNo models installed in {root}.\nAdd one with: swinssl models download NAME (see: swinssl models available), "
              "or swinssl models import FOLDER (a package, a MONAI bundle or a fine-tuning run)")
    return 0


def _models_catalogue(args: argparse.Namespace, root: Path) -> int:
    """``available``: the catalogue's entries; ``download NAME``: one of them installed, with a progress bar."""
    from swinssl.catalogue import find_entry, load_catalogue

    entries = load_catalogue(Path(args.catalogue) if args.catalogue else None)
    if args.action == "available":
        for entry in entries:
            state = "installed" if entry.installed_folder(root).exists() else "not installed"
            print(f"{entry.name}  [{entry.format}, {entry.modality}, {state}, {entry.verification()}]\n  {entry.title}\n  licence: {entry.licence}")
        return 0
    if not args.source:
        raise ValueError("swinssl models download needs a NAME (see: swinssl models available)")
    entry = find_entry(args.source, entries)
    from tqdm import tqdm

    from swinssl.model_download import download_model

    bar = tqdm(total=entry.size, unit="B", unit_scale=True, desc=entry.name, disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def progress(done: int, total: int | None) -> None:
        bar.total = total
        bar.update(done - bar.n)

    def install(events: EventLog) -> list[Path]:
        def report(done: int, total: int | None) -> None:
            progress(done, total)
            events.emit("progress", stage="download", bytes=done, total_bytes=total)

        try:
            folder = download_model(entry, root, report, args.allow_unverified)
        finally:
            bar.close()
        events.emit("done", outputs={"model": folder}, licence=entry.licence, citation=entry.citation)
        return [folder]

    return _with_event_log(args.events, install)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from swinssl.evaluate import evaluate, markdown_table
    from swinssl.io.atomic import atomic_write_text

    result = evaluate(Path(args.pred), Path(args.ref), args.tolerance, Path(args.ref_names) if args.ref_names else None)
    table = markdown_table(result)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=2))
    if args.markdown:
        atomic_write_text(Path(args.markdown), table + "\n")
    print(f"Compared: {result['compared']}\n{table}")
    return 0


def _add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=output_folder, help="model package folder (training state goes to OUT/training)")
    parser.add_argument("--data", nargs="+", metavar="DIR", type=existing_path, help="MSD folders (dataset.json) or folders of <name> + <name>_label(s)/_seg pairs")
    parser.add_argument("--datalist", dest="datalists", nargs="+", metavar="JSON", type=existing_path, help="MONAI/MSD datalists (training/validation entries)")
    parser.add_argument("--scenes", nargs="+", metavar="MRB|SEG", type=existing_path, help="Slicer .mrb bundles, .seg.nrrd files (beside their volume) or folders of them")
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="segment names to learn, in this order (default: all names found)")
    parser.add_argument("--name", help="model name (default: the --out folder name)")
    parser.add_argument("--modality", help="input modality shown in Slicer (default CT)")
    parser.add_argument("--preset", choices=("ct", "mr", "pet", "none"))
    parser.add_argument("--channel-presets", nargs="+", choices=("ct", "mr", "pet", "none"),
                        help="multi-channel images (e.g. `swinssl align` CT+PET output): one preset per channel, e.g. ct pet")
    parser.add_argument("--window", nargs=2, type=finite_float, metavar=("LOW", "HIGH"),
                        help="intensity window of the --preset channel -> 0..1 (CT default: -175 250 HU, as the BTCV reference and tutorial)")
    parser.add_argument("--spacing", nargs=3, type=positive_float, metavar=("X", "Y", "Z"), help="model spacing in mm (default 1.5 1.5 2)")
    parser.add_argument("--roi", type=roi_size, help="window edge in voxels, multiple of 32, >= 64 (default 96)")
    parser.add_argument("--feature-size", type=feature_size, help="default 48")
    parser.add_argument("--init", type=init_source, help="random (default), a pretraining run, a model package (folder or installed name; its spacing, window, ROI, feature "
                        "size, classes and patch merging are kept unless given, and the result is compared with it), a MONAI bundle folder or a weights file")
    parser.add_argument("--patch-merging", choices=PATCH_MERGING_CHOICES, help=PATCH_MERGING_HELP)
    parser.add_argument("--encoder-only", action="store_true", default=None,
                        help="load only the encoder (swinViT) of --init (an ablation); default: every tensor whose name and shape fit, decoder included")
    parser.add_argument("--crop-sampling", choices=CROP_SAMPLING_CHOICES,
                        help="centre of the positive half of the crops: posneg (default, as the BTCV tutorial) a random labelled "
                             "voxel, so large organs dominate; classes: a random voxel of a random class present in the case")
    parser.add_argument("--steps", type=positive_int)
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--lr", type=positive_float)
    parser.add_argument("--weight-decay", type=non_negative_float)
    parser.add_argument("--warmup-steps", type=non_negative_int)
    parser.add_argument("--overlap", type=fraction, help="validation sliding-window overlap (default 0.5)")
    parser.add_argument("--val-every", type=positive_int, help="validate every K steps (default 100)")
    parser.add_argument("--val-cases", type=positive_int, help="hold out this many cases for validation")
    parser.add_argument("--checkpoint-every", type=positive_int)
    parser.add_argument("--no-amp", dest="amp", action="store_const", const=False)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--events", help="JSON Lines event file, or - for stdout")
    parser.add_argument("--stop-at", type=positive_int)
    parser.add_argument("--stop-file", help=STOP_FILE_HELP)
    parser.add_argument("--train-cases", type=positive_int, help="use only the first N training cases")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="swinssl", description="Self-supervised Swin UNETR for medical volumes.")
    parser.add_argument("--version", action="version", version=f"swinssl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks of errors (before the command: swinssl --debug segment ...)")
    commands = parser.add_subparsers(dest="command", required=True)
    pretrain = commands.add_parser("pretrain", help="self-supervised pretraining (inpainting + rotation + contrastive)")
    _add_pretrain_arguments(pretrain)
    pretrain.set_defaults(handler=_cmd_pretrain)
    finetune = commands.add_parser("finetune", help="fine-tune SwinUNETR on labelled volumes; writes a model package")
    _add_finetune_arguments(finetune)
    finetune.add_argument("--resume", action="store_true", help="continue the fine-tuning in --out from its checkpoint")
    finetune.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    finetune.set_defaults(handler=_cmd_finetune)
    compare = commands.add_parser("compare-init", help="label-efficiency study: fine-tune from scratch vs pretrained with N labelled cases")
    _add_finetune_arguments(compare)
    compare.add_argument("--pretrained", required=True, type=init_source, help="pretrained weights (a pretraining run, package, bundle or file)")
    compare.add_argument("--n", dest="counts", type=positive_int, nargs="+", required=True, help="numbers of labelled training cases")
    compare.add_argument("--ood-data", nargs="+", metavar="DIR", type=existing_path, help="labelled cases of another modality to evaluate every model on")
    compare.add_argument("--ood-preset", choices=("ct", "mr", "pet", "none"), default="mr", help="intensity preset of the --ood-data cases (default mr)")
    compare.add_argument("--overwrite", action="store_true", help="replace an earlier study in --out")
    compare.set_defaults(handler=_cmd_compare_init)
    align = commands.add_parser("align", help="register CT to PET per patient and write 2-channel CT+PET volumes on the PET grid")
    align.add_argument("--data", nargs="+", required=True, metavar="DIR", type=existing_path, help="folders with <case>_ct.* + <case>_pet.* (or ct/ + pet/ subfolders)")
    align.add_argument("--out", required=True, type=output_folder, help="folder for <case>_ctpet.nrrd (+ _labels) files")
    align.add_argument("--affine", action="store_true", help="an affine stage after the rigid one")
    align.add_argument("--no-register", dest="register", action="store_false", help="data already aligned: resample only")
    align.add_argument("--events", help="JSON Lines event file, or - for stdout")
    align.set_defaults(handler=_cmd_align)
    segment = commands.add_parser("segment", help="segment volume(s) with a model package")
    segment.add_argument("--model", required=True, type=model_folder, help="model package folder (model.json + model.safetensors) or an installed model's name")
    segment.add_argument("--input", required=True, nargs="+", type=existing_path, help="one volume file or DICOM folder per model channel")
    segment.add_argument("--output", required=True, type=segmentation_output, help="OUT.seg.nrrd (Slicer segmentation) or OUT.nii.gz (+ OUT.json label table)")
    segment.add_argument("--overlay", type=png_output, help="also write OUT.png: the segments over the first input, slices through their centre")
    segment.add_argument("--confidence", type=volume_output,
                         help="also write OUT.nrrd: per voxel the largest softmax probability (0..1) on the input grid; the summary and "
                              "the done event give each segment's mean and share below --confidence-threshold")
    segment.add_argument("--dicom-seg", type=dicom_output, metavar="OUT.dcm",
                         help="also write a DICOM Segmentation (SNOMED CT codes, referencing the series) when the first input is a DICOM series folder")
    segment.add_argument("--confidence-threshold", type=fraction, default=0.6, help="default 0.6 (two classes tied give 0.5)")
    segment.add_argument("--overwrite", action="store_true", help="replace existing output files (refused without it)")
    segment.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    segment.add_argument("--overlap", type=fraction, default=0.5, help="sliding-window overlap (default 0.5)")
    segment.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                         help="auto (default): bf16/fp16 on GPUs, fp32 on the CPU; bf16 on a CPU with AVX-512 BF16 or AMX is "
                              "faster but changes about 1 %% of organ voxels (fp32 where the CPU has no bf16; see benchmarks/RESULTS.md)")
    segment.add_argument("--backend", type=backend_name, choices=BACKENDS,
                         help="auto (default, or $SWINSSL_BACKEND): OpenVINO on the CPU when installed, PyTorch on GPUs; torch; "
                              "openvino (the CPU; the first run converts the model, later runs load it from the cache)")
    segment.add_argument("--fast", action="store_true", help="coarser spacing (x1.5) for quick previews")
    segment.add_argument("--batch-size", type=positive_int, default=4, help="windows per forward pass")
    segment.add_argument("--register", action="store_true",
                         help="several inputs taken apart (e.g. CT and PET): register each to the first (rigid MI) before stacking")
    segment.add_argument("--allow-mismatch", action="store_true",
                         help="segment an input that is certainly not the model's kind (e.g. an MR into a CT model) anyway; refused without it")
    segment.add_argument("--events", help="JSON Lines event file, or - for stdout")
    segment.set_defaults(handler=_cmd_segment)
    models = commands.add_parser("models", help="list installed models, list the catalogue, download or import a model")
    models.add_argument("action", choices=("list", "available", "download", "import"))
    models.add_argument("source", nargs="?", help="download: a catalogue name; import: a model package, MONAI bundle folder, "
                        "fine-tuning run or checkpoint")
    models.add_argument("--name", help="import: package name (default: the source's)")
    models.add_argument("--models-dir", help="default: $SWINSSL_MODELS or ~/.local/share/swinssl/models")
    models.add_argument("--patch-merging", choices=PATCH_MERGING_CHOICES, help="import: " + PATCH_MERGING_HELP)
    models.add_argument("--catalogue", type=existing_path, help="available/download: a catalogue JSON file (default: the built-in one)")
    models.add_argument("--allow-unverified", action="store_true",
                        help="download: install an entry whose source publishes no hash (its SHA-256 is recorded)")
    models.add_argument("--events", help="download, import: JSON Lines event file, or - for stdout")
    models.set_defaults(handler=_cmd_models)
    evaluate = commands.add_parser("evaluate", help="per-class Dice, HD95 and surface Dice of a segmentation against a reference")
    evaluate.add_argument("--pred", required=True, type=existing_path, help="predicted .seg.nrrd or label map")
    evaluate.add_argument("--ref", required=True, type=existing_path, help="reference .seg.nrrd or label map (classes matched by name)")
    evaluate.add_argument("--ref-names", type=existing_path, help="names of a reference label map without them: JSON {value: name} "
                          "or CSV value,name lines (as atlases ship them)")
    evaluate.add_argument("--tolerance", type=positive_float, default=2.0, help="surface Dice tolerance in mm (default 2)")
    evaluate.add_argument("--json", type=file_output, help="write the metrics as JSON here")
    evaluate.add_argument("--markdown", type=file_output, help="write the Markdown table here")
    evaluate.set_defaults(handler=_cmd_evaluate)
    cache = commands.add_parser("cache", help="prepare the preprocessed-volume cache of pretrain ahead of a (cluster) run, in parallel")
    _add_data_arguments(cache, required=True)
    cache.add_argument("--rank", type=non_negative_int, help="this process's share when several share the work (default $RANK or 0)")
    cache.add_argument("--world-size", type=positive_int, help="processes sharing the work (default $WORLD_SIZE or 1)")
    cache.add_argument("--events", help="JSON Lines event file (rank 0), or - for stdout")
    cache.set_defaults(handler=_cmd_cache)
    web = commands.add_parser("web", help="SwinSSL Web: open, segment, correct and train in a browser (pip install 'swinssl[web]')")
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other address requires an access token)")
    web.add_argument("--port", type=tcp_port, default=8080, help="port (default 8080; 0: any free port)")
    web.add_argument("--data", nargs="+", default=[], metavar="DIR", type=existing_folder,
                     help="server folders the page may browse (volumes, DICOM series, labelled cases); nothing outside them is reachable")
    web.add_argument("--models", metavar="DIR", help="model packages (default: $SWINSSL_MODELS or ~/.local/share/swinssl/models)")
    web.add_argument("--runs", metavar="DIR", help="pretraining runs (default: runs/ beside the models folder)")
    web.add_argument("--cases", metavar="DIR", help="the training set 'Add to training set' writes to (default: training-set/ beside the models folder)")
    web.add_argument("--token", help="access token (default: generated and printed when --host is not loopback)")
    web.add_argument("--upload-limit-mb", type=positive_int, default=2048, help="largest upload accepted (default 2048 MB)")
    web.add_argument("--demo", action="store_true", help="open the bundled demo CT with the bundled organ model")
    web.add_argument("--catalogue", type=existing_path, help="the model catalogue offered for download (default: the built-in one)")
    web.set_defaults(handler=_cmd_web)
    demo = commands.add_parser("demo", help="short pretraining with previews on the bundled CT (CPU, a few minutes)")
    demo.add_argument("--out", default="swinssl-demo", type=output_folder, help="output folder (default ./swinssl-demo)")
    demo.add_argument("--steps", type=positive_int, default=10)
    demo.add_argument("--events", help="JSON Lines event file, or - for stdout")
    demo.set_defaults(handler=_cmd_demo)
    return parser


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line plus a pointer to --help (the full usage of a command is a screen long). No abbreviated
    options (``--step 5`` is an error, not ``--steps 5``); the subcommands' parsers are of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


USER_ERRORS = (OSError, ValueError, RuntimeError)
MESSAGE_LIMIT = 400


def short_message(error: BaseException) -> str:
    """One or two lines for the terminal: the file and the problem, never a dump (key lists, C++ frames)."""
    if isinstance(error, OSError) and error.filename and str(error.filename) not in str(error):
        text = f"{error.filename}: {error.strerror or error}"
    else:
        text = str(error) or type(error).__name__
    lines = [line for line in text.strip().splitlines() if line.strip()][:2]
    text = "\n".join(lines)
    if len(text) > MESSAGE_LIMIT:
        text = text[:MESSAGE_LIMIT].rstrip() + " ..."
    if not isinstance(error, USER_ERRORS):
        text = f"{type(error).__name__}: {text} (run 'swinssl --debug ...' for the traceback)"
    return text


def quiet_third_party_warnings() -> None:
    """MONAI's and torch's deprecation notices concern their API, not the user's data: not shown. Our own
    warnings (skipped files, doubtful inputs) are events, printed one line each."""
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(monai|torch)(\.|$)")


def main(argv: list[str] | None = None) -> int:
    quiet_third_party_warnings()
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("swinssl: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"swinssl {args.command}: error: {short_message(error)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

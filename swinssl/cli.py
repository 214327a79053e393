"""Command line: ``swinssl pretrain | finetune | compare-init | align | segment | evaluate | models | demo`` (``python -m swinssl`` and ``torchrun -m swinssl`` too).

Exit statuses: 0 finished, 1 error (message on stderr and as an ``error`` event), 2 bad command
line, 3 stopped by SIGTERM/SIGINT or ``--stop-at`` after writing a checkpoint (``--resume`` goes on).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from swinssl import __version__
from swinssl.training.signals import EXIT_ERROR

STOP_FILE_HELP = ("stop as on SIGTERM once this file exists, checked after every step: the signal-free stop channel "
                  "the Slicer modules and the web app use (works on Windows and through launchers)")

if TYPE_CHECKING:
    from swinssl.events import EventLog


def _add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option defaults to None so that only what the user typed overrides a config."""
    data = parser.add_argument_group("data")
    data.add_argument("--data", nargs="+", metavar="DIR", help="folders (searched recursively) or files: NIfTI, NRRD, MetaImage, DICOM series")
    data.add_argument("--cache-dir", help="preprocessed-volume cache (default: $SWINSSL_CACHE or ~/.cache/swinssl/volumes)")
    data.add_argument("--preset", choices=("ct", "mr", "pet", "none"), help="intensity preset (default ct: -1000..1000 HU -> 0..1)")
    data.add_argument("--modality", nargs="+", choices=("ct", "mr", "pet"),
                      help="one per --data entry: tags its volumes (batches balance the modalities) and applies that modality's preset")
    data.add_argument("--window", nargs=2, type=float, metavar=("LOW", "HIGH"), help="custom intensity window -> 0..1")
    data.add_argument("--pet-max-suv", type=float, help="pet preset: clip at this SUV (default: a percentile)")
    data.add_argument("--pet-percentile", type=float, help="pet preset: clip percentile when no SUV is given (default 99.9)")
    data.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"), help="resample to this spacing in mm")
    data.add_argument("--no-orient", dest="orient_ras", action="store_const", const=False, help="keep the stored axis order (default: RAS)")
    data.add_argument("--no-crop-foreground", dest="crop_foreground", action="store_const", const=False)
    model = parser.add_argument_group("model")
    model.add_argument("--in-channels", type=int, help="image channels (default 1)")
    model.add_argument("--channel-presets", nargs="+", choices=("ct", "mr", "pet", "none"),
                       help="one intensity preset per channel of multi-channel volumes, e.g. ct pet for `swinssl align` output")
    model.add_argument("--roi", type=int, help="cubic crop edge in voxels, divisible by 32 (default 96)")
    model.add_argument("--feature-size", type=int, help="Swin embedding size, multiple of 12 (default 48)")
    model.add_argument("--projection-dim", type=int, help="contrastive projection size (default 512)")
    model.add_argument("--decoder", choices=("deconv", "upsample"), help="reconstruction head (default deconv)")
    model.add_argument("--gradient-checkpointing", action="store_const", const=True)
    model.add_argument("--swinfuse", action="store_const", const=True,
                       help="SwinFUSE: cross-view domain-invariance module and KDE/JSD density matching between modalities")
    model.add_argument("--jsd-weight", type=float, help="weight w of the density term, L = ... + w * JSD (default 0.1)")
    model.add_argument("--kde-sigma", type=float, help="KDE bandwidth (default: median pairwise feature distance per batch)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--steps", type=int, help="total steps (default 1000)")
    optim.add_argument("--batch-size", type=int, help="crops per step and process; each gives two views (default 2)")
    optim.add_argument("--lr", type=float, help="peak learning rate (default 4e-4)")
    optim.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0.1)")
    optim.add_argument("--warmup-steps", type=int, help="linear warmup (default: 10%% of steps, at most 500)")
    optim.add_argument("--grad-clip", type=float, help="gradient-norm clip (default 1.0)")
    optim.add_argument("--temperature", type=float, help="NT-Xent temperature (default 0.5)")
    optim.add_argument("--loss-weights", nargs=3, type=float, metavar=("ROT", "CONTRAST", "INPAINT"), help="default 1 1 1")
    optim.add_argument("--cutout-max-fraction", type=float, help="largest share of a view hidden by cutout (default 0.3)")
    optim.add_argument("--no-amp", dest="amp", action="store_const", const=False, help="fp32 on the GPU too")
    optim.add_argument("--deterministic", action="store_const", const=True, help="deterministic GPU kernels (always on for the CPU)")
    optim.add_argument("--seed", type=int)
    optim.add_argument("--device", choices=("auto", "cpu", "cuda"))
    run = parser.add_argument_group("run control")
    run.add_argument("--out", required=True, help="run folder: config, checkpoint, encoder, previews")
    run.add_argument("--events", help="JSON Lines event file, or - for stdout")
    run.add_argument("--checkpoint-every", type=int, help="default 100")
    run.add_argument("--preview-every", type=int, help="write an inpainting preview every K steps (default 0: never)")
    run.add_argument("--log-every", type=int, help="progress event every K steps (default 1)")
    run.add_argument("--stop-at", type=int, help="stop as on SIGTERM after this step (for time-limited cluster jobs)")
    run.add_argument("--stop-file", help=STOP_FILE_HELP)
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


def _pretrain_config(args: argparse.Namespace):
    from swinssl.training.config import RUN_CONTROL_FIELDS, PretrainConfig

    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "handler", "resume", "loss_weights")}
    if args.loss_weights is not None:
        given.update(zip(("loss_rotation", "loss_contrast", "loss_inpaint"), args.loss_weights))
    if not args.resume:
        if not args.data:
            raise SystemExit("swinssl pretrain: error: --data is required (unless --resume)")
        return PretrainConfig(**given)
    saved_path = Path(args.out) / "config.json"
    if not saved_path.exists():
        raise FileNotFoundError(f"cannot resume: {saved_path} does not exist")
    saved = PretrainConfig.load(saved_path).to_dict()
    changed = [k for k, v in given.items() if k not in RUN_CONTROL_FIELDS + ("out",) and _normalised(v) != _normalised(saved.get(k))]
    if changed:
        raise ValueError(f"cannot change {', '.join('--' + k.replace('_', '-') for k in changed)} when resuming {args.out}")
    saved.update(given)
    saved.update(stop_at=given.get("stop_at"), stop_file=given.get("stop_file"))
    return PretrainConfig.from_dict(saved)


def _normalised(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from swinssl.training.pretrain import run_pretraining

    return run_pretraining(_pretrain_config(args), resume=args.resume, show_progress=sys.stderr.isatty())


def _cmd_demo(args: argparse.Namespace) -> int:
    from swinssl.demo import run_demo

    return run_demo(Path(args.out), steps=args.steps, events=args.events, show_progress=sys.stderr.isatty())


def _with_event_log(path: str | None, work: Callable[[EventLog], list[Path]]) -> int:
    """Runs ``work(events)``, which returns the files it wrote, and prints them; an exception becomes
    an ``error`` event and then propagates (the CLI turns it into exit status 1)."""
    from swinssl.events import EventLog

    events = EventLog(path)
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


def _cmd_segment(args: argparse.Namespace) -> int:
    from swinssl.inference.segment import SegmentOptions, segment_files
    from swinssl.package import load_package

    def segment(events: EventLog) -> list[Path]:
        package = load_package(args.model)
        options = SegmentOptions(overlap=args.overlap, fast=args.fast, device=args.device, batch_size=args.batch_size, register=args.register)
        return segment_files([Path(p) for p in args.input], Path(args.output), package, options, events)

    return _with_event_log(args.events, segment)


def _cmd_finetune(args: argparse.Namespace) -> int:
    import json

    from swinssl.finetune.config import FINETUNE_RUN_CONTROL, FinetuneConfig
    from swinssl.finetune.train import run_finetune

    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "handler", "resume")}
    if args.resume:
        saved_path = Path(args.out) / "training" / "config.json"
        if not saved_path.exists():
            raise FileNotFoundError(f"cannot resume: {saved_path} does not exist")
        saved = json.loads(saved_path.read_text())
        changed = [k for k in given if k not in FINETUNE_RUN_CONTROL + ("out",) and _normalised(given[k]) != _normalised(saved.get(k))]
        if changed:
            raise ValueError(f"cannot change {', '.join('--' + k.replace('_', '-') for k in changed)} when resuming {args.out}")
        saved.update(given)
        saved.update(stop_at=given.get("stop_at"), stop_file=given.get("stop_file"))
        config = FinetuneConfig.from_dict(saved)
    else:
        config = FinetuneConfig(**given)
    return run_finetune(config, resume=args.resume, show_progress=sys.stderr.isatty())


def _cmd_compare_init(args: argparse.Namespace) -> int:
    from swinssl.finetune.compare import compare_init
    from swinssl.finetune.config import FinetuneConfig

    given = {k: v for k, v in vars(args).items()
             if v is not None and k not in ("command", "handler", "pretrained", "counts", "init", "ood_data", "ood_preset")}
    rows = compare_init(FinetuneConfig(**given), args.pretrained, args.counts, Path(args.out), args.ood_data, args.ood_preset)
    print((Path(args.out) / "compare_init.md").read_text(), end="")
    return 0 if rows else 1


def _cmd_models(args: argparse.Namespace) -> int:
    from swinssl.models import import_model, list_packages, models_dir

    root = Path(args.models_dir) if args.models_dir else models_dir()
    if args.action == "import":
        if not args.source:
            raise ValueError("swinssl models import needs a SOURCE")
        print(import_model(Path(args.source), root, args.name))
        return 0
    for package in list_packages(root):
        channels = "+".join(c.modality for c in package.channels)
        print(f"{package.name}\t{package.version}\t{channels}\t{len(package.labels.labels)} labels\t{package.path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from swinssl.evaluate import evaluate, markdown_table

    result = evaluate(Path(args.pred), Path(args.ref), args.tolerance, Path(args.ref_names) if args.ref_names else None)
    table = markdown_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    print(table)
    return 0


def _add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="model package folder (training state goes to OUT/training)")
    parser.add_argument("--data", nargs="+", metavar="DIR", help="MSD folders (dataset.json) or folders of <name> + <name>_label(s)/_seg pairs")
    parser.add_argument("--datalist", dest="datalists", nargs="+", metavar="JSON", help="MONAI/MSD datalists (training/validation entries)")
    parser.add_argument("--scenes", nargs="+", metavar="MRB|SEG", help="Slicer .mrb bundles, .seg.nrrd files (beside their volume) or folders of them")
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="segment names to learn, in this order (default: all names found)")
    parser.add_argument("--name", help="model name (default: the --out folder name)")
    parser.add_argument("--modality", help="input modality shown in Slicer (default CT)")
    parser.add_argument("--preset", choices=("ct", "mr", "pet", "none"))
    parser.add_argument("--channel-presets", nargs="+", choices=("ct", "mr", "pet", "none"),
                        help="multi-channel images (e.g. `swinssl align` CT+PET output): one preset per channel, e.g. ct pet")
    parser.add_argument("--window", nargs=2, type=float, metavar=("LOW", "HIGH"))
    parser.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"), help="model spacing in mm (default 1.5 1.5 2)")
    parser.add_argument("--roi", type=int, help="window edge in voxels, multiple of 32, >= 64 (default 96)")
    parser.add_argument("--feature-size", type=int, help="default 48")
    parser.add_argument("--init", help="random (default), a pretraining run, a model package, a MONAI bundle folder or a weights file")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--overlap", type=float, help="validation sliding-window overlap (default 0.5)")
    parser.add_argument("--val-every", type=int, help="validate every K steps (default 100)")
    parser.add_argument("--val-cases", type=int, help="hold out this many cases for validation")
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--no-amp", dest="amp", action="store_const", const=False)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--events", help="JSON Lines event file, or - for stdout")
    parser.add_argument("--stop-at", type=int)
    parser.add_argument("--stop-file", help=STOP_FILE_HELP)
    parser.add_argument("--train-cases", type=int, help="use only the first N training cases")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swinssl", description="Self-supervised Swin UNETR for medical volumes.")
    parser.add_argument("--version", action="version", version=f"swinssl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    pretrain = commands.add_parser("pretrain", help="self-supervised pretraining (inpainting + rotation + contrastive)")
    _add_pretrain_arguments(pretrain)
    pretrain.set_defaults(handler=_cmd_pretrain)
    finetune = commands.add_parser("finetune", help="fine-tune SwinUNETR on labelled volumes; writes a model package")
    _add_finetune_arguments(finetune)
    finetune.add_argument("--resume", action="store_true")
    finetune.set_defaults(handler=_cmd_finetune)
    compare = commands.add_parser("compare-init", help="label-efficiency study: fine-tune from scratch vs pretrained with N labelled cases")
    _add_finetune_arguments(compare)
    compare.add_argument("--pretrained", required=True, help="pretrained weights (a pretraining run, package, bundle or file)")
    compare.add_argument("--n", dest="counts", type=int, nargs="+", required=True, help="numbers of labelled training cases")
    compare.add_argument("--ood-data", nargs="+", metavar="DIR", help="labelled cases of another modality to evaluate every model on")
    compare.add_argument("--ood-preset", choices=("ct", "mr", "pet", "none"), default="mr", help="intensity preset of the --ood-data cases (default mr)")
    compare.set_defaults(handler=_cmd_compare_init)
    align = commands.add_parser("align", help="register CT to PET per patient and write 2-channel CT+PET volumes on the PET grid")
    align.add_argument("--data", nargs="+", required=True, metavar="DIR", help="folders with <case>_ct.* + <case>_pet.* (or ct/ + pet/ subfolders)")
    align.add_argument("--out", required=True, help="folder for <case>_ctpet.nrrd (+ _labels) files")
    align.add_argument("--affine", action="store_true", help="an affine stage after the rigid one")
    align.add_argument("--no-register", dest="register", action="store_false", help="data already aligned: resample only")
    align.add_argument("--events", help="JSON Lines event file, or - for stdout")
    align.set_defaults(handler=_cmd_align)
    segment = commands.add_parser("segment", help="segment volume(s) with a model package")
    segment.add_argument("--model", required=True, help="model package folder (model.json + model.safetensors)")
    segment.add_argument("--input", required=True, nargs="+", help="one volume file or DICOM folder per model channel")
    segment.add_argument("--output", required=True, help="OUT.seg.nrrd (Slicer segmentation) or OUT.nii.gz (+ OUT.json label table)")
    segment.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    segment.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default 0.5)")
    segment.add_argument("--fast", action="store_true", help="coarser spacing (x1.5) for quick previews")
    segment.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    segment.add_argument("--register", action="store_true",
                         help="several inputs taken apart (e.g. CT and PET): register each to the first (rigid MI) before stacking")
    segment.add_argument("--events", help="JSON Lines event file, or - for stdout")
    segment.set_defaults(handler=_cmd_segment)
    models = commands.add_parser("models", help="list installed model packages, or import one")
    models.add_argument("action", choices=("list", "import"))
    models.add_argument("source", nargs="?", help="import: a model package, MONAI bundle folder, fine-tuning run or checkpoint")
    models.add_argument("--name", help="import: package name (default: the source's)")
    models.add_argument("--models-dir", help="default: $SWINSSL_MODELS or ~/.local/share/swinssl/models")
    models.set_defaults(handler=_cmd_models)
    evaluate = commands.add_parser("evaluate", help="per-class Dice, HD95 and surface Dice of a segmentation against a reference")
    evaluate.add_argument("--pred", required=True, help="predicted .seg.nrrd or label map")
    evaluate.add_argument("--ref", required=True, help="reference .seg.nrrd or label map (classes matched by name)")
    evaluate.add_argument("--ref-names", help="JSON {value: name} for a reference label map without names")
    evaluate.add_argument("--tolerance", type=float, default=2.0, help="surface Dice tolerance in mm (default 2)")
    evaluate.add_argument("--json", help="write the metrics as JSON here")
    evaluate.add_argument("--markdown", help="write the Markdown table here")
    evaluate.set_defaults(handler=_cmd_evaluate)
    demo = commands.add_parser("demo", help="short pretraining with previews on the bundled CT (CPU, a few minutes)")
    demo.add_argument("--out", default="swinssl-demo", help="output folder (default ./swinssl-demo)")
    demo.add_argument("--steps", type=int, default=16)
    demo.add_argument("--events", help="JSON Lines event file, or - for stdout")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("swinssl: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as error:
        print(f"swinssl {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

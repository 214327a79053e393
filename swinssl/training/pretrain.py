"""The self-supervised pretraining loop (Tang et al., CVPR 2022), resumable and signal-safe."""

from __future__ import annotations

import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from swinssl import __version__
from swinssl.events import EventLog
from swinssl.preprocessing.cache import PreparedVolume
from swinssl.preprocessing.intensity import IntensitySettings, normalize_intensity
from swinssl.ssl.density import modality_jsd
from swinssl.ssl.losses import pretext_losses
from swinssl.ssl.model import SSLModel
from swinssl.summary import duration, loss_table, outputs_block
from swinssl.training.checkpoint import CHECKPOINT_NAME, ENCODER_NAME, SWINUNETR_NAME, export_encoder, load_checkpoint
from swinssl.training.config import PretrainConfig
from swinssl.training.data import LoadedVolumes, load_volumes
from swinssl.training.distributed import (
    Runtime,
    autocast_dtype,
    gather,
    gather_with_grad,
    start_runtime,
    stop_runtime,
    use_deterministic_kernels,
)
from swinssl.training.preview import PreviewWriter, plot_loss_curves
from swinssl.training.loop import LoopSettings, run_training_loop
from swinssl.training.run_folder import prepare_run_folder
from swinssl.training.sampler import CropSampler, PretextBatch
from swinssl.training.schedule import build_optimizer
from swinssl.training.signals import EXIT_OK, EXIT_STOPPED
from swinssl.training.state import TrainState
from swinssl.weights import WeightsSource, choose_patch_merging, is_decoder_key, provenance, read_weights, to_swinunetr_keys, weights_file_of

LOSS_NAMES = ("total", "rotation", "contrast", "inpaint")
# Time per step on a CPU, from two measurements on 2 cores (AMD EPYC, benchmarks/RESULTS.md and issue 22): 9 s at
# feature 12, ROI 64, batch 2; about 108 s at the defaults (feature 48, ROI 96, batch 2). Scaled by voxels x batch,
# feature size and threads: a rough figure, said as one. No GPU figure was measured, so none is estimated.
CPU_STEP_S, CPU_STEP_SIZES, CPU_STEP_THREADS = 9.0, (12, 64, 2), 2
SLOW_CPU_STEP_S = 30.0  # above this, say how to make a first run on the CPU short
SMALL_CPU_SIZES = "--roi 64 --feature-size 12 --batch-size 2"
NO_AIR_HU = -500.0  # a CT has air (-1000 HU) around the body; a volume with nothing below this is probably not CT
AIR_CHECK_VOLUMES = 50  # volumes looked at for that (their minimum), at the start
FLAT_CONTRAST_STEPS = 10  # warn when the contrastive loss has not left ln(2B - 1) within this many steps


def split_views(projection: torch.Tensor, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """Local (2B, D) = [view 1; view 2] -> the two views' (world * B, D) projections of all ranks."""
    gathered = gather_with_grad(projection, runtime)  # (world * 2B, D), rank by rank
    views = gathered.view(runtime.world_size, 2, -1, gathered.shape[-1])
    return views[:, 0].reshape(-1, gathered.shape[-1]), views[:, 1].reshape(-1, gathered.shape[-1])


def train_step(
    network: torch.nn.Module, state: TrainState, batch: PretextBatch, config: PretrainConfig, runtime: Runtime, amp: torch.dtype | None
) -> tuple[dict[str, float], bool]:
    """One optimisation step. Returns (losses as floats, whether the weights were updated)."""
    device = runtime.device
    inputs = batch.inputs.to(device, non_blocking=True)
    targets = batch.targets.to(device, non_blocking=True)
    rotations = batch.rotations.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext():
        output = network(inputs, paired_views=True)
    losses = pretext_losses(
        output.rotation_logits,
        rotations,
        split_views(output.projection.float(), runtime),
        output.reconstruction,
        targets,
        config.loss_weights(),
        config.temperature,
        batch.masks.to(device, non_blocking=True) if config.inpaint_loss == "masked" else None,
    )
    if config.swinfuse:  # density matching over the crops of all ranks: + w * JSD pulls the modalities' feature densities together
        features = gather_with_grad(output.pooled.float(), runtime)
        jsd = modality_jsd(features, gather(batch.modalities.to(device), runtime), config.kde_sigma)
        losses["jsd"] = jsd if jsd is not None else output.pooled.new_zeros(())
        losses["total"] = losses["total"] + config.jsd_weight * losses["jsd"]
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(losses["total"]).backward()
    state.scaler.unscale_(state.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip)
    finite = bool(torch.isfinite(grad_norm))
    if finite or state.scaler.is_enabled():
        state.scaler.step(state.optimizer)  # the scaler itself skips non-finite steps
    state.scaler.update()
    state.scheduler.step()
    return {name: float(losses[name].detach()) for name in (*LOSS_NAMES, "jsd") if name in losses}, finite


class PretextTask:
    """The pretext tasks as a :class:`swinssl.training.loop.TrainingTask`: batches of two augmented views per crop,
    :func:`train_step`, and inpainting previews every ``preview_every`` steps (rank 0)."""

    loss_names = LOSS_NAMES

    def __init__(self, network: torch.nn.Module, state: TrainState, config: PretrainConfig, runtime: Runtime, amp: torch.dtype | None,
                 sampler: CropSampler, preview: PreviewWriter | None, events: EventLog) -> None:
        self.network, self.state, self.config, self.runtime, self.amp = network, state, config, runtime, amp
        self.sampler, self.preview, self.events = sampler, preview, events
        self.cutout = config.cutout()
        crops = config.batch_size * runtime.world_size
        self.chance_contrast = math.log(2 * crops - 1) if crops > 1 and config.loss_contrast > 0 else None
        self.contrast_moved = False

    def batch(self, step: int) -> PretextBatch:
        return self.sampler.batch(step, self.cutout, self.config.rotate)

    def train_step(self, batch: PretextBatch) -> dict[str, float]:
        losses, updated = train_step(self.network, self.state, batch, self.config, self.runtime, self.amp)
        if not updated:
            self.events.emit("warning", file=None, reason=f"non-finite gradients at step {self.state.step + 1}; weights not updated")
        self._watch_contrast(losses["contrast"])
        return losses

    def _watch_contrast(self, loss: float) -> None:
        """Warns once when the contrastive loss sat at ln(2B - 1), its value when a crop's two views are no closer than
        the other crops (all similarities equal), for each of the run's first FLAT_CONTRAST_STEPS steps."""
        if self.chance_contrast is None or self.state.step >= FLAT_CONTRAST_STEPS:  # state.step: steps done before this one
            return
        self.contrast_moved |= abs(loss - self.chance_contrast) > 0.01 * self.chance_contrast
        if self.state.step == FLAT_CONTRAST_STEPS - 1 and not self.contrast_moved:
            self.events.emit("warning", file=None, reason=(
                f"the contrastive loss stayed at ln(2B-1) = {self.chance_contrast:.3f} for the first {FLAT_CONTRAST_STEPS} steps: "
                "a crop's two views are no closer than the other crops of the step, so the term teaches nothing yet; crops that "
                "overlap almost entirely (one small volume) give no usable negatives: add volumes, or set its weight to 0"))

    def seconds_left(self, step: int) -> float:
        return 0.0  # previews take a fraction of a step

    def after_step(self, step: int, show_status: Callable[[str], None]) -> dict:
        if self.preview is not None and step % self.config.preview_every == 0:
            self.events.emit("preview", step=step, **self.preview.write(self.state.model, step, self.runtime.device))
        return {}


def load_pretraining_weights(model: SSLModel, source: WeightsSource, merging: tuple[str, str]) -> dict:
    """Loads every tensor of ``source`` whose name and shape match ``model``: a pretraining checkpoint or model
    of ours or of the reference script (encoder and the heads that fit), or any encoder layout that
    :mod:`swinssl.weights` maps onto ``swinViT.*``. Fails when less than half of the encoder's tensors were found."""
    mapped = to_swinunetr_keys(source.state, source.layout)
    if source.layout in ("swinssl-pretrain", "reference-ssl"):
        mapped.update({key: value for key, value in source.state.items() if not key.startswith("swinViT.")})  # the heads
    target = model.state_dict()
    usable = {key: value.to(target[key].dtype) for key, value in mapped.items() if key in target and target[key].shape == value.shape}
    encoder = [key for key in target if key.startswith("swinViT.") and not key.endswith("relative_position_index")]
    decoder = [key for key in target if is_decoder_key(key)]
    found = sum(key in usable for key in encoder)
    if found < len(encoder) / 2:
        raise ValueError(f"{source.path}: only {found} of the encoder's {len(encoder)} tensors match this model (feature size, channels?)")
    model.load_state_dict(usable, strict=False)
    return {"source": str(source.path), "layout": source.layout, "matched": len(usable), "total": len(target), "encoder_matched": found,
            "encoder_total": len(encoder), "decoder_matched": sum(key in usable for key in decoder), "decoder_total": len(decoder),
            "patch_merging": merging[0], "patch_merging_reason": merging[1]}


def run_pretraining(config: PretrainConfig, resume: bool = False, show_progress: bool = False, overwrite: bool = False,
                    print_summary: bool = False) -> int:
    """Runs (or resumes) pretraining into ``config.out``; returns the CLI exit status.

    Rank 0 writes events, previews and checkpoints. With ``overwrite`` a previous run in ``out`` is set
    aside until the first checkpoint of this one is written. Errors are reported as an ``error`` event
    and re-raised. ``print_summary`` prints the outputs, per-task losses and time at the end (the CLI).
    """
    started = time.monotonic()
    runtime = start_runtime(config.device)
    if runtime.is_main:
        prepare_run_folder(Path(config.out), overwrite and not resume, subfolders=("previews",))
    events = EventLog(config.events if runtime.is_main else None, echo_warnings=runtime.is_main)
    try:
        status, state, outputs = _pretrain(config, resume, show_progress, runtime, events)
        if print_summary and runtime.is_main:
            print("\n".join(_summary(status, state, outputs, config, time.monotonic() - started)), flush=True)
        return status
    except Exception as error:
        events.emit("error", message=str(error), kind=type(error).__name__)
        raise
    finally:
        events.close()
        stop_runtime(runtime)


def load_data_groups(config: PretrainConfig, events: EventLog, runtime: Runtime, show_progress: bool) -> LoadedVolumes:
    """Every usable volume of every ``--data`` group, tagged with its modality."""
    loaded = LoadedVolumes([])
    for modality, roots in config.data_groups():
        group = load_volumes(roots, config.prep_settings(modality or None), config.cache_dir, events, runtime, config.cache_workers,
                             show_progress)
        for volume in group.volumes:
            volume.modality = modality
        loaded.volumes += group.volumes
        loaded.skipped += group.skipped
        loaded.built += group.built
    return loaded


def expected_cpu_step_s(config: PretrainConfig, threads: int) -> float:
    """A rough time per step on ``threads`` CPU threads (see :data:`CPU_STEP_S`)."""
    feature, roi, batch = CPU_STEP_SIZES
    return CPU_STEP_S * (config.feature_size / feature) * (config.roi / roi) ** 3 * (config.batch_size / batch) * CPU_STEP_THREADS / threads


def announce_step_time(config: PretrainConfig, runtime: Runtime, events: EventLog) -> float | None:
    """Before the volumes are prepared (rank 0): on a CPU, the expected time per step and for the run, with the small
    sizes to use there when a step is long (a warning). Returns the expected seconds per step (None on a GPU)."""
    if runtime.device.type != "cpu":
        return None
    threads = torch.get_num_threads()
    expected = expected_cpu_step_s(config, threads)
    sizes = f"feature size {config.feature_size}, ROI {config.roi}, batch {config.batch_size}"
    said = (f"on the CPU ({threads} threads) a step at {sizes} takes about {duration(expected)} (a rough estimate), "
            f"{config.steps} steps about {duration(expected * config.steps)}")
    if expected > SLOW_CPU_STEP_S:
        events.emit("warning", file=None, reason=f"{said}: for a first run on a CPU use {SMALL_CPU_SIZES} (seconds a step), or a GPU")
    else:
        print(said[0].upper() + said[1:] + ".", file=sys.stderr, flush=True)
    return expected


def warn_no_air(config: PretrainConfig, volumes: list[PreparedVolume], events: EventLog) -> None:
    """A warning when volumes read with the CT preset hold no air: MR or PET pretrained as CT (up to
    :data:`AIR_CHECK_VOLUMES` volumes are looked at; their arrays are C, X, Y, Z in 0..1)."""
    if config.channel_presets is not None or config.window is not None:
        return
    air = float(normalize_intensity(np.array([[[[NO_AIR_HU]]]], np.float32), IntensitySettings("ct")).item())
    checked = [volume for volume in volumes if (volume.modality or config.preset) == "ct"][:AIR_CHECK_VOLUMES]
    no_air = [volume for volume in checked if float(np.min(volume.array)) > air]
    if no_air:  # one warning for the run (file=None), naming the first such volume
        events.emit("warning", file=None, reason=f"nothing below {NO_AIR_HU:g} HU in {len(no_air)} of {len(checked)} volume(s) read as CT "
                    f"({no_air[0].source_name}{' and others' if len(no_air) > 1 else ''}), but CT has air near -1000 HU: if they are "
                    "MR or PET, give --preset mr or pet (or --modality per --data folder); the CT window -1000..1000 HU is used")


def _pretrain(config: PretrainConfig, resume: bool, show_progress: bool, runtime: Runtime, events: EventLog) -> tuple[int, TrainState, dict]:
    """Returns (exit status, the training state, the outputs written)."""
    out = Path(config.out)
    deterministic = use_deterministic_kernels(runtime.device, config.deterministic)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    expected_step_s = announce_step_time(config, runtime, events) if runtime.is_main else None
    loaded = load_data_groups(config, events, runtime, show_progress)
    volumes, skipped = loaded.volumes, loaded.skipped
    if runtime.is_main:
        warn_no_air(config, volumes, events)

    source = read_weights(weights_file_of(config.init)) if config.init and not resume else None
    merging = (config.patch_merging or "v1.5", "the run's config") if resume else choose_patch_merging(source, config.patch_merging)
    config.patch_merging = merging[0]
    model = SSLModel(config.in_channels, config.feature_size, config.projection_dim, config.gradient_checkpointing, config.decoder,
                     swinfuse=config.swinfuse, legacy_patch_merging=merging[0] == "legacy")
    model.to(runtime.device)
    optimizer, scheduler = build_optimizer(model, config.lr, config.weight_decay, config.warmup, config.steps)
    amp = autocast_dtype(runtime.device, config.amp)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=amp == torch.float16)
    state = TrainState("pretrain", model, optimizer, scheduler, scaler)
    init_report = None
    if resume:
        state.restore(load_checkpoint(out / CHECKPOINT_NAME))
    elif source is not None:
        init_report = load_pretraining_weights(model, source, merging)
    network = model
    if runtime.distributed:
        network = DistributedDataParallel(model, device_ids=[runtime.device] if runtime.device.type == "cuda" else None)

    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.json")
    events.emit(
        "start",
        config=config.to_dict(),
        volumes=len(volumes),
        modalities={m: sum(v.modality == m for v in volumes) for m in sorted({v.modality for v in volumes})} if config.modality else None,
        skipped=skipped,
        device=str(runtime.device),
        world_size=runtime.world_size,
        amp=str(amp).replace("torch.", "") if amp else "fp32",
        deterministic=deterministic,
        start_step=state.step,
        resumed=resume,
        init=init_report,
        patch_merging={"order": merging[0], "reason": merging[1]},
        swinssl_version=__version__,
        expected_step_s=expected_step_s,
    )

    if config.batch_size * runtime.world_size < 2 and config.loss_contrast > 0:
        events.emit("warning", file=None, reason="one crop per step: the contrastive loss has no negatives and stays 0; use --batch-size 2 or more")
    if config.swinfuse and len({v.modality for v in volumes}) < 2:
        events.emit("warning", file=None, reason="--swinfuse with one modality: the density term (JSD) stays 0; tag two --data folders with --modality")
    elif config.swinfuse and config.batch_size * runtime.world_size < 2:
        events.emit("warning", file=None, reason="--swinfuse: a step holds 1 crop, so no step can compare two modalities and the JSD "
                    "stays 0; use --batch-size 2 or more processes")
    sampler = CropSampler(volumes, config.roi, config.batch_size, config.seed, runtime.rank)  # modalities balanced over all ranks
    preview = (PreviewWriter(out / "previews", volumes[0], config.roi, config.seed, config.cutout(), config.preview_display())
               if runtime.is_main and config.preview_every > 0 else None)
    task = PretextTask(network, state, config, runtime, amp, sampler, preview, events)
    settings = LoopSettings(config.steps, config.batch_size, config.checkpoint_every, out / CHECKPOINT_NAME, out, config.to_dict(),
                            config.log_every, config.stop_at, config.stop_file)
    if run_training_loop(state, task, settings, runtime, events, show_progress):
        return EXIT_STOPPED, state, {"checkpoint": out / CHECKPOINT_NAME}

    if runtime.is_main:
        export_encoder(model.encoder_state_dict(), out / ENCODER_NAME, provenance(merging[0]))
        if model.full_decoder:  # encoder + decoder for fine-tuning (finetune --init RUN picks this file)
            export_encoder(model.swinunetr_state_dict(), out / SWINUNETR_NAME, provenance(merging[0]))
        outputs = {
            "checkpoint": out / CHECKPOINT_NAME,
            "encoder": out / ENCODER_NAME,
            "swinunetr": out / SWINUNETR_NAME if model.full_decoder else None,
            "config": out / "config.json",
            "loss_curves": plot_loss_curves(state.history, out / "loss_curves.png") if state.history else None,
            "previews": out / "previews" if preview is not None else None,
        }
        events.emit("done", step=state.step, outputs=outputs)
        return EXIT_OK, state, outputs
    return EXIT_OK, state, {}


def _summary(status: int, state: TrainState, outputs: dict, config: PretrainConfig, seconds: float) -> list[str]:
    if status == EXIT_STOPPED:
        head = [f"\nPretraining stopped at step {state.step} of {config.steps} after {duration(seconds)}; checkpoint written.",
                f"  continue with: swinssl pretrain --out {config.out} --resume"]
    else:
        head = [f"\nPretraining finished: step {state.step} of {config.steps} in {duration(seconds)}."]
    return head + loss_table(state.history, LOSS_NAMES) + outputs_block(outputs)

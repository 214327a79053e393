"""The training loop that pretraining and fine-tuning share: prefetching, the optimisation step, progress
events and bar, periodic hooks (previews, validation), stop requests, checkpoints and resume.

A trainer supplies a :class:`TrainingTask`; the loop knows nothing of pretext tasks or labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, TypeVar

from tqdm import tqdm

from swinssl.events import EventLog
from swinssl.training.checkpoint import atomic_torch_save
from swinssl.training.clock import StepClock
from swinssl.training.distributed import Runtime, any_rank
from swinssl.training.run_folder import discard_previous_run
from swinssl.training.sampler import Prefetcher
from swinssl.training.signals import StopRequest
from swinssl.training.state import TrainState

Batch = TypeVar("Batch")


class TrainingTask(Protocol[Batch]):
    """What a trainer gives the loop."""

    loss_names: tuple[str, ...]  # the losses kept in the history, in its column order after the step

    def batch(self, step: int) -> Batch:
        """The inputs of ``step`` (0-based), built in a background thread; a pure function of the step, so resume is exact."""

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimisation step; returns its losses (at least ``loss_names``)."""

    def after_step(self, step: int, show_status: Callable[[str], None]) -> dict:
        """Periodic work after ``step`` (1-based): previews, validation. Returns fields for that step's progress
        event (an event is always written when there are any); ``show_status`` writes a line on the progress bar."""

    def seconds_left(self, step: int) -> float:
        """The time the periodic work after ``step`` (1-based) will still take (validations); added to the ETA."""


@dataclass(frozen=True)
class LoopSettings:
    steps: int
    batch_size: int  # crops per step and process
    checkpoint_every: int
    checkpoint_path: Path
    run_folder: Path  # where a run set aside by --overwrite is discarded after the first checkpoint
    config: dict  # saved in every checkpoint
    log_every: int = 1
    stop_at: int | None = None
    stop_file: str | None = None


@dataclass
class _Progress:
    """The terminal bar: step count, the losses, and a status line while a hook runs."""

    bar: tqdm

    def show(self, losses: dict[str, float]) -> None:
        self.bar.update(1)
        self.bar.set_postfix({("loss" if name == "total" and len(losses) == 1 else name[:4]): f"{value:.3f}"
                              for name, value in losses.items()}, refresh=False)

    def status(self, text: str) -> None:
        self.bar.set_postfix_str(text)


def run_training_loop(state: TrainState, task: TrainingTask, settings: LoopSettings, runtime: Runtime, events: EventLog,
                      show_progress: bool) -> bool:
    """Trains from ``state.step`` to ``settings.steps``. Returns True when it stopped early (SIGTERM, SIGINT, the
    stop file or ``stop_at``) after writing a checkpoint; all ranks stop at the same step. Rank 0 writes events
    and checkpoints."""
    prefetcher: Prefetcher = Prefetcher(task.batch)
    progress = _Progress(tqdm(total=settings.steps, initial=state.step, disable=not (show_progress and runtime.is_main), unit="step",
                              dynamic_ncols=True))
    clock = StepClock()
    try:
        with StopRequest(settings.stop_file) as stop:
            while state.step < settings.steps:
                clock.start()
                batch = prefetcher.get(state.step)
                clock.data_ready()
                losses = task.train_step(batch)
                state.step += 1
                state.history.append([float(state.step)] + [losses[name] for name in task.loss_names])
                clock.stop()
                extra = task.after_step(state.step, progress.status)
                if extra or state.step % settings.log_every == 0 or state.step == settings.steps:
                    events.emit("progress", step=state.step, total=settings.steps, losses=losses, lr=state.optimizer.param_groups[0]["lr"],
                                samples_per_s=settings.batch_size * runtime.world_size / clock.average,
                                eta_s=clock.eta(settings.steps - state.step) + task.seconds_left(state.step),  # validations included
                                data_wait_s=clock.data_wait, step_s=clock.last, **extra)
                progress.show(losses)
                stop_requested = stop.requested or (settings.stop_at is not None and state.step >= settings.stop_at)
                stop_now = any_rank(stop_requested, runtime) and state.step < settings.steps
                if stop_now or state.step % settings.checkpoint_every == 0 or state.step == settings.steps:
                    _save_checkpoint(state, settings, runtime, events)
                if stop_now:
                    events.emit("stopped", step=state.step, total=settings.steps, reason=stop.reason or "stop_at",
                                checkpoint=settings.checkpoint_path)
                    return True
    finally:
        progress.bar.close()
        prefetcher.close()
    return False


def _save_checkpoint(state: TrainState, settings: LoopSettings, runtime: Runtime, events: EventLog) -> None:
    if runtime.is_main:
        atomic_torch_save(state.checkpoint(settings.config), settings.checkpoint_path)
        discard_previous_run(settings.run_folder)
        events.emit("checkpoint", path=settings.checkpoint_path, step=state.step)

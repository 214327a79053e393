"""Everything a training loop checkpoints and restores (pretraining and fine-tuning alike)."""

from __future__ import annotations

from dataclasses import dataclass, field

import monai
import torch

from swinssl import __version__
from swinssl.training.checkpoint import CHECKPOINT_FORMAT, restore_rng_state, rng_state


@dataclass
class TrainState:
    """Model, optimiser, scheduler, AMP scaler, step, loss history and loop-specific ``extra`` values."""

    kind: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    step: int = 0
    history: list[list[float]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def checkpoint(self, config: dict) -> dict:
        """Everything to resume, with the run's settings; ``patch_merging`` and ``monai_version`` say which
        network the weights belong to (see :mod:`swinssl.weights`)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "swinssl_version": __version__,
            "monai_version": monai.__version__,
            "patch_merging": config.get("patch_merging") or "v1.5",
            "kind": self.kind,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "extra": self.extra,
            "config": config,
        }

    def restore(self, checkpoint: dict) -> None:
        if checkpoint.get("kind", self.kind) != self.kind:
            raise ValueError(f"this is a {checkpoint.get('kind')} checkpoint, not a {self.kind} one")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_state(checkpoint["rng"])
        self.step = int(checkpoint["step"])
        self.history = [list(row) for row in checkpoint["history"]]
        self.extra = dict(checkpoint.get("extra", {}))

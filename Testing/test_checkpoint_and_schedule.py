"""Atomic checkpoints, weights-only loading (malicious pickles refused), RNG round trip, LR schedule."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

from swinssl.training.checkpoint import atomic_torch_save, load_checkpoint, restore_rng_state, rng_state
from swinssl.training.schedule import warmup_cosine_factor


class Explodes:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"step": 5, "w": torch.ones(3)}, path)
    with pytest.raises(OSError, match="disk full"):  # torch's write error, named and reported as an OSError
        atomic_torch_save({"step": 6, "bad": Explodes()}, path)
    assert load_checkpoint(path)["step"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_a_checkpoint_with_a_code_payload_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with path.open("wb") as stream:
        torch.save({"model": {}, "extra": Payload()}, stream, pickle_module=pickle)
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned_marker").exists()


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    atomic_torch_save({"rng": rng_state()}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_warmup_then_cosine():
    assert warmup_cosine_factor(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine_factor(3, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine_factor(4, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine_factor(12, 4, 20) == pytest.approx(0.5)
    assert warmup_cosine_factor(20, 4, 20) == pytest.approx(0.0)
    assert warmup_cosine_factor(25, 4, 20) == pytest.approx(0.0)

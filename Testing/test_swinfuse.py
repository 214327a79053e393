"""SwinFUSE: the cross-view domain-invariance module, the KDE/JSD density term, modality-balanced
batches, and a mixed CT+MR pretraining run on the real volumes that logs the JSD term."""

import math

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL, run_cli
from swinssl.events import read_events
from swinssl.preprocessing.cache import PreparedVolume
from swinssl.preprocessing.spatial import Geometry
from swinssl.ssl.augment import CutoutSettings
from swinssl.ssl.density import kde_jsd, modality_jsd
from swinssl.ssl.domain_invariance import DomainInvarianceModule
from swinssl.training.sampler import CropSampler


def opened_module(feature: int) -> DomainInvarianceModule:
    """A module whose gate is open (it starts at zero, i.e. as the identity)."""
    torch.manual_seed(0)
    module = DomainInvarianceModule(feature)
    with torch.no_grad():
        module.gate.fill_(1.0)
    return module


@pytest.mark.parametrize("roi, feature", [(32, 12), (64, 24), (96, 48), (64, 36)])
def test_domain_invariance_shapes_and_gradients_for_any_roi_and_feature_size(roi, feature):
    module = opened_module(feature)
    tokens = torch.randn(4, feature, roi // 2, roi // 2, roi // 2, requires_grad=True)  # 2 crops x 2 views
    out = module(tokens)
    assert out.shape == tokens.shape
    out.square().mean().backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert tokens.grad.abs().sum() > 0


def test_domain_invariance_starts_as_the_identity():
    module = DomainInvarianceModule(12)
    tokens = torch.randn(2, 12, 16, 16, 16)
    assert torch.equal(module(tokens), tokens)


def test_no_attention_across_samples_of_a_batch():
    module = opened_module(12)
    tokens = torch.randn(6, 12, 16, 16, 16)  # views [a1, b1, c1, a2, b2, c2]
    changed = tokens.clone()
    changed[[1, 4]] = torch.randn(2, 12, 16, 16, 16)  # sample b, both views
    with torch.no_grad():
        before, after = module(tokens), module(changed)
    untouched = [0, 2, 3, 5]
    assert torch.equal(before[untouched], after[untouched])
    assert not torch.allclose(before[[1, 4]], after[[1, 4]])
    with pytest.raises(ValueError, match="even batch"):
        module(tokens[:3])


def brute_force_jsd(x: torch.Tensor, y: torch.Tensor, sigma: float) -> float:
    """The documented formula with explicit loops, in float64."""
    union = [row for row in torch.cat([x, y]).double()]

    def density(z, samples):
        return sum(math.exp(-float(((z - s) ** 2).sum()) / (2 * sigma**2)) for s in samples.double()) / len(samples)

    p = np.array([density(z, x) for z in union])
    q = np.array([density(z, y) for z in union])
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return float(0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum())


def test_kde_jsd_matches_the_formula_is_zero_for_identical_sets_and_grows_with_separation():
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    y = torch.randn(4, 3) + 0.7
    assert kde_jsd(x, y, sigma=1.3).item() == pytest.approx(brute_force_jsd(x, y, 1.3), rel=1e-5)
    assert kde_jsd(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    values = [kde_jsd(x, x + shift, sigma=1.0).item() for shift in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert values[0] == pytest.approx(0.0, abs=1e-7)
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[-1] <= math.log(2) + 1e-6


def test_jsd_gradient_pulls_the_two_sets_together():
    torch.manual_seed(0)
    x = torch.randn(8, 4, requires_grad=True)
    y = (torch.randn(8, 4) + 2.0).requires_grad_()
    optimizer = torch.optim.SGD([x, y], lr=5.0)
    gap = [float((x.mean(0) - y.mean(0)).norm().detach())]
    divergence = [kde_jsd(x, y, sigma=2.0).item()]
    for _ in range(20):
        optimizer.zero_grad()
        kde_jsd(x, y, sigma=2.0).backward()
        optimizer.step()
        gap.append(float((x.mean(0) - y.mean(0)).norm().detach()))
        divergence.append(kde_jsd(x, y, sigma=2.0).item())
    assert gap[-1] < 0.8 * gap[0], gap
    assert divergence[-1] < divergence[0]


def test_modality_jsd_needs_two_modalities():
    features = torch.randn(4, 8)
    assert modality_jsd(features, torch.tensor([0, 0, 0, 0])) is None
    assert modality_jsd(features, torch.tensor([0, 1, 0, 1])).item() >= 0


def test_batches_balance_the_modalities():
    geometry = Geometry((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), tuple(np.eye(3).ravel()))
    volumes = [PreparedVolume(f"ct{n}", np.full((1, 40, 40, 40), 0.2, np.float16), geometry, "ct") for n in range(3)]
    volumes.append(PreparedVolume("mr0", np.full((1, 40, 40, 40), 0.8, np.float16), geometry, "mr"))
    sampler = CropSampler(volumes, 32, 2, seed=0)
    assert sampler.modalities == ["ct", "mr"]
    for step in range(6):
        batch = sampler.batch(step, CutoutSettings())
        assert sorted(batch.modalities.tolist()) == [0, 0, 1, 1]
        for view, modality in zip(batch.targets, batch.modalities):
            assert float(view.mean()) == pytest.approx(0.2 if modality == 0 else 0.8, abs=1e-3)


def test_mixed_ct_and_mr_pretraining_on_real_volumes_logs_the_jsd_term(tmp_path, shared_data):
    events = tmp_path / "events.jsonl"
    result = run_cli("pretrain", "--data", str(shared_data / "ct"), str(shared_data / "mr"), "--modality", "ct", "mr", "--swinfuse",
                     "--jsd-weight", "0.5", "--spacing", "4", "4", "4", "--batch-size", "2", "--steps", "2", *TINY_MODEL,
                     "--out", str(tmp_path / "run"), "--events", str(events), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    log = read_events(events)
    start = next(e for e in log if e["event"] == "start")
    assert start["config"]["swinfuse"] and start["modalities"]["ct"] >= 3 and start["modalities"]["mr"] >= 3
    progress = [e for e in log if e["event"] == "progress"]
    assert len(progress) == 2
    for event in progress:
        jsd = event["losses"]["jsd"]
        assert 0 < jsd <= math.log(2)
        parts = event["losses"]
        assert parts["total"] == pytest.approx(parts["rotation"] + parts["contrast"] + parts["inpaint"] + 0.5 * jsd, rel=1e-4)


def test_modality_and_channel_options_are_checked():
    from swinssl.training.config import PretrainConfig

    with pytest.raises(ValueError, match="one value per --data entry: 2 data, 1 modalities"):
        PretrainConfig(data=["a", "b"], modality=["ct"])
    with pytest.raises(ValueError, match="cannot be combined"):
        PretrainConfig(data=["a"], modality=["ct"], channel_presets=["ct", "pet"])
    assert PretrainConfig(data=["a"], channel_presets=["ct", "pet"]).in_channels == 2


def test_no_rotation_leaves_views_unrotated_and_needs_a_zero_rotation_weight():
    from swinssl.training.config import PretrainConfig

    with pytest.raises(ValueError, match="--no-rotation turns the rotation task off"):
        PretrainConfig(data=["a"], rotate=False)
    assert not PretrainConfig(data=["a"], rotate=False, loss_rotation=0.0).rotate
    geometry = Geometry((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), tuple(np.eye(3).ravel()))
    ramp = np.broadcast_to(np.linspace(0, 1, 40, dtype=np.float16)[:, None, None], (40, 40, 40))[None].copy()
    sampler = CropSampler([PreparedVolume("ct", ramp, geometry, "")], 32, 2, seed=0)
    batch = sampler.batch(0, CutoutSettings(max_fraction=0.0), rotate=False)
    assert (batch.rotations == 0).all()
    crops, _ = sampler.crops(0)
    assert torch.equal(batch.targets, torch.cat([crops, crops]))
    rotated = sampler.batch(0, CutoutSettings(max_fraction=0.0))
    assert (rotated.rotations != 0).any() and not torch.equal(rotated.targets, batch.targets)

"""Each pretext loss against a brute-force computation of the paper's formula on tiny tensors."""

import math

import torch

from swinssl.ssl.losses import LossWeights, nt_xent, pretext_losses


def brute_force_nt_xent(z1, z2, temperature):
    """SimCLR eq. (1): l(i,j) = -log exp(sim(i,j)/t) / sum_{k != i} exp(sim(i,k)/t), averaged over 2N anchors."""
    z = torch.cat([z1, z2]).double()
    n2 = z.shape[0]
    n = n2 // 2

    def sim(a, b):
        return float(z[a] @ z[b] / (z[a].norm() * z[b].norm()))

    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        denominator = sum(math.exp(sim(i, k) / temperature) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim(i, j) / temperature) / denominator)
    return total / n2


def test_nt_xent_matches_brute_force():
    torch.manual_seed(0)
    for n, d, t in [(1, 3, 0.5), (3, 5, 0.5), (4, 8, 0.1), (2, 2, 1.0)]:
        z1, z2 = torch.randn(n, d), torch.randn(n, d)
        assert abs(float(nt_xent(z1, z2, t)) - brute_force_nt_xent(z1, z2, t)) < 1e-5


def test_nt_xent_is_low_for_matching_views_and_high_for_swapped():
    z = torch.eye(4) * 5
    assert float(nt_xent(z, z, 0.5)) < float(nt_xent(z, z.roll(1, 0), 0.5))


def test_pretext_losses_match_brute_force_and_weights():
    torch.manual_seed(1)
    logits, labels = torch.randn(4, 4), torch.tensor([0, 3, 1, 2])
    z1, z2 = torch.randn(2, 6), torch.randn(2, 6)
    recon, target = torch.rand(4, 1, 2, 2, 2), torch.rand(4, 1, 2, 2, 2)
    weights = LossWeights(rotation=0.5, contrast=2.0, inpaint=3.0)
    losses = pretext_losses(logits, labels, (z1, z2), recon, target, weights, 0.5)

    rotation = -sum(float(logits[i, labels[i]] - torch.logsumexp(logits[i], 0)) for i in range(4)) / 4
    inpaint = float((recon - target).abs().sum()) / recon.numel()
    contrast = brute_force_nt_xent(z1, z2, 0.5)
    assert abs(float(losses["rotation"]) - rotation) < 1e-5
    assert abs(float(losses["inpaint"]) - inpaint) < 1e-6
    assert abs(float(losses["contrast"]) - contrast) < 1e-5
    assert abs(float(losses["total"]) - (0.5 * rotation + 2.0 * contrast + 3.0 * inpaint)) < 1e-4

import torch

from swinssl.ssl.augment import CutoutSettings, inner_cutout, rotate_views


def test_rotation_turns_axial_slices_about_z():
    x = torch.arange(2 * 1 * 4 * 4 * 3, dtype=torch.float32).reshape(2, 1, 4, 4, 3)
    rotated, labels = rotate_views(x, torch.Generator().manual_seed(3))
    assert rotated.shape == x.shape and labels.dtype == torch.int64
    for b in range(2):
        k = int(labels[b])
        for z in range(3):
            expected = x[b, 0, :, :, z]
            for _ in range(k):  # brute force: one quarter turn maps (i, j) -> (n - 1 - j, i)
                n = expected.shape[0]
                expected = torch.stack([torch.stack([expected[j, n - 1 - i] for j in range(n)]) for i in range(n)])
            assert torch.equal(rotated[b, 0, :, :, z], expected), (b, k, z)


def test_all_four_rotation_classes_occur():
    _, labels = rotate_views(torch.zeros(64, 1, 2, 2, 2), torch.Generator().manual_seed(0))
    assert set(labels.tolist()) == {0, 1, 2, 3}


def test_cutout_reaches_the_target_fraction_with_noise_in_0_1():
    x = torch.full((6, 1, 32, 32, 32), 0.5)
    settings = CutoutSettings(max_fraction=0.3, min_fraction=0.2)
    masked, mask = inner_cutout(x, torch.Generator().manual_seed(0), settings)
    fractions = mask.float().mean(dim=(1, 2, 3, 4))
    box_share = settings.max_box**3
    assert (fractions >= 0.2).all() and (fractions <= 0.3 + box_share).all()
    assert torch.equal(masked[~mask.expand_as(x)], x[~mask.expand_as(x)])
    noise = masked[mask.expand_as(x)]
    assert noise.min() >= 0 and noise.max() <= 1 and noise.std() > 0.05


def test_cutout_is_deterministic_for_a_seed_and_varies_across_seeds():
    x = torch.rand(2, 1, 32, 32, 32)
    a, _ = inner_cutout(x, torch.Generator().manual_seed(5))
    b, _ = inner_cutout(x, torch.Generator().manual_seed(5))
    c, _ = inner_cutout(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_fraction_leaves_views_unchanged():
    x = torch.rand(2, 1, 32, 32, 32)
    masked, mask = inner_cutout(x, torch.Generator().manual_seed(0), CutoutSettings(max_fraction=0.0))
    assert not mask.any() and torch.equal(masked, x)

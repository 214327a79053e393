import torch

from swinssl.ssl.augment import CutoutSettings, inner_cutout, reference_cutout, rotate_views


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


# --- the reference cutout (research-contributions SwinUNETR/Pretrain utils/ops.py: patch_rand_drop, aug_rand) ---
def test_reference_boxes_have_the_reference_edges_and_per_box_noise():
    """A tiny target fraction makes one box per pass: edges in [int(0.05 n), int(0.25 n)) = [4, 24) for n = 96,
    starts in [0, 92), ends clipped at the border; the box's own noise spans exactly 0..1 (min-max per box)."""
    settings = CutoutSettings(max_fraction=1e-6, min_fraction=1e-6)
    generator = torch.Generator().manual_seed(0)
    edges, starts = [], []
    for _ in range(300):
        masked, mask = reference_cutout(torch.full((1, 1, 96, 96, 96), 0.5), generator, settings)
        where = torch.nonzero(mask[0, 0])
        low, high = where.min(0).values, where.max(0).values + 1
        assert int(mask.sum()) == int((high - low).prod())  # one box
        box = masked[0, 0, low[0]:high[0], low[1]:high[1], low[2]:high[2]]
        assert float(box.min()) == 0.0 and float(box.max()) == 1.0
        starts += low.tolist()
        edges += [int(e) for e, h in zip(high - low, high) if h < 96]  # edges not clipped by the border
    assert min(edges) == 4 and max(edges) == 23 and min(starts) == 0 and 88 <= max(starts) <= 91


def test_reference_pastes_from_another_crop_with_probability_n_minus_1_over_n():
    """Crop i holds the constant 2 + i (noise lies in 0..1), so a value 2 + j in crop i can only be pasted from j."""
    batch = 4
    views = torch.stack([torch.full((1, 32, 32, 32), 2.0 + i) for i in range(batch)])
    generator = torch.Generator().manual_seed(1)
    pasted = []
    for _ in range(200):
        masked, _ = reference_cutout(views, generator, CutoutSettings(max_fraction=0.3))
        pasted += [any(bool((masked[i] == 2.0 + j).any()) for j in range(batch) if j != i) for i in range(batch)]
    share = sum(pasted) / len(pasted)
    assert abs(share - (batch - 1) / batch) < 0.06, share
    single, _ = reference_cutout(views[:1], generator, CutoutSettings(max_fraction=0.3))
    assert not (single == 3.0).any()  # one crop: nothing to paste from
    grouped, _ = reference_cutout(views, generator, CutoutSettings(max_fraction=0.3), groups=torch.tensor([0, 1, 0, 1]))
    for i, j in ((0, 1), (0, 3), (1, 0), (1, 2), (2, 1), (2, 3), (3, 0), (3, 2)):
        assert not (grouped[i] == 2.0 + j).any(), (i, j)  # never pasted across groups (modalities)


def test_reference_fraction_counts_box_volumes_until_the_target():
    """s is reached by summed box volumes (overlaps counted twice, boxes clipped at the border), so one pass
    hides less than s on average, unlike the exact style, which hides at least s."""
    settings = CutoutSettings(max_fraction=0.3, min_fraction=0.3)
    generator = torch.Generator().manual_seed(2)
    shares = torch.stack([reference_cutout(torch.full((1, 1, 64, 64, 64), 0.5), generator, settings)[1].float().mean() for _ in range(20)])
    assert 0.2 < float(shares.mean()) < 0.295 and (shares <= 0.3 + (16 / 64) ** 3).all()
    exact = inner_cutout(torch.full((20, 1, 64, 64, 64), 0.5), generator, CutoutSettings(0.3, 0.3, style="exact"))[1]
    assert (exact.float().mean(dim=(1, 2, 3, 4)) >= 0.3).all()
    assert CutoutSettings().style == "reference"

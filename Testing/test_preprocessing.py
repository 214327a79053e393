"""Intensity presets against their formulas; orientation/resampling/cropping keep physical positions."""

import numpy as np
import pytest

from conftest import phantom_ct, write_volume
from swinssl.io.discovery import VolumeSource
from swinssl.preprocessing.cache import PrepSettings, VolumeCache, prepare_volume
from swinssl.preprocessing.intensity import IntensitySettings, normalize_intensity
from swinssl.preprocessing.spatial import pad_to_size


def test_ct_preset_is_the_papers_window():
    hu = np.array([[[[-2000, -1000, 0, 500, 1000, 3000]]]], dtype=np.float32)
    out = normalize_intensity(hu, IntensitySettings("ct"))
    assert out.ravel().tolist() == pytest.approx([0, 0, 0.5, 0.75, 1, 1])


def test_custom_window_overrides_the_preset():
    out = normalize_intensity(np.array([[[[-200, 40, 240, 500]]]], np.float32), IntensitySettings("ct", window=(-160, 240)))
    assert out.ravel().tolist() == pytest.approx([0, 0.5, 1, 1])


def test_mr_preset_clips_at_per_volume_percentiles():
    rng = np.random.default_rng(0)
    volume = rng.gamma(2.0, 100.0, size=(1, 20, 20, 20)).astype(np.float32)
    low, high = np.percentile(volume, [0.5, 99.5])
    expected = np.clip((volume - low) / (high - low), 0, 1)
    assert np.allclose(normalize_intensity(volume, IntensitySettings("mr")), expected, atol=1e-5)


def test_pet_preset_by_suv_and_by_percentile():
    suv = np.array([[[[0, 2.5, 5, 20]]]], np.float32)
    assert normalize_intensity(suv, IntensitySettings("pet", pet_max_suv=5)).ravel().tolist() == pytest.approx([0, 0.5, 1, 1])
    volume = np.random.default_rng(1).exponential(2.0, (1, 10, 10, 10)).astype(np.float32)
    high = np.percentile(volume, 99.0)
    out = normalize_intensity(volume, IntensitySettings("pet", pet_percentile=99.0))
    assert np.allclose(out, np.clip(volume / high, 0, 1), atol=1e-5)


def test_unknown_preset_and_bad_window_are_refused():
    with pytest.raises(ValueError, match="unknown intensity preset"):
        IntensitySettings("xray")
    with pytest.raises(ValueError, match="window"):
        IntensitySettings("ct", window=(100, 0))


def physical_point(geometry, index_ijk):
    direction = np.asarray(geometry.direction).reshape(3, 3)
    return np.asarray(geometry.origin) + direction @ (np.asarray(geometry.spacing) * np.asarray(index_ijk, float))


@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 1.0)])
def test_a_bright_spot_keeps_its_physical_position(tmp_path, spacing):
    """LPS-flipped, anisotropic input -> RAS, resampled, foreground-cropped, padded: same place in mm."""
    volume = np.full((20, 24, 28), -1000, np.int16)  # (K, J, I)
    volume[4:16, 3:21, 5:25] = 0  # body
    k, j, i = 9, 11, 17
    volume[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2] = 1000  # 3x3x3 spot centred at (i, j, k)
    direction = (-1, 0, 0, 0, 1, 0, 0, 0, -1)
    path = write_volume(tmp_path / "lps.nrrd", volume, spacing=(2.0, 1.5, 3.0), origin=(10.0, -20.0, 30.0), direction=direction)
    source_geometry = type("G", (), {"origin": (10.0, -20.0, 30.0), "spacing": (2.0, 1.5, 3.0), "direction": direction})
    expected = physical_point(source_geometry, (i, j, k))

    array, geometry = prepare_volume(VolumeSource(path), PrepSettings(spacing=spacing, min_size=(16, 16, 16)))
    assert np.allclose(np.asarray(geometry.direction).reshape(3, 3), np.diag([-1, -1, 1]))  # RAS
    bright = np.argwhere(array[0] > 0.9)
    found = physical_point(geometry, bright.mean(axis=0))
    assert np.linalg.norm(found - expected) < 0.5


def test_padding_reaches_the_roi_at_the_far_end():
    array = np.full((1, 10, 40, 5), 0.5, np.float32)
    array[0, 0, 0, 0] = 0.2
    padded = pad_to_size(array, (32, 32, 32))
    assert padded.shape == (1, 32, 40, 32)
    assert np.array_equal(padded[:, :10, :, :5], array)  # data stays at index 0: origin unchanged
    assert np.all(padded[:, 10:] == 0.2) and np.all(padded[..., 5:] == 0.2)  # filled with the minimum


def test_cache_builds_once_memory_maps_and_rebuilds_when_the_source_changes(tmp_path, ct_phantom_file):
    cache = VolumeCache(tmp_path / "cache")
    settings = PrepSettings(min_size=(32, 32, 32))
    source = VolumeSource(ct_phantom_file)
    first = cache.get(source, settings)
    assert isinstance(first.array, np.memmap) and first.array.dtype == np.float16
    cached_file = next((tmp_path / "cache").glob("*.npy"))
    stamp = cached_file.stat().st_mtime_ns
    assert cache.is_fresh(source, settings)
    cache.get(source, settings)
    assert cached_file.stat().st_mtime_ns == stamp  # not rebuilt

    reference, _ = prepare_volume(source, settings)
    assert np.abs(np.asarray(first.array, np.float32) - reference).max() < 1e-3  # float16 is lossless enough

    write_volume(ct_phantom_file, phantom_ct(seed=9) // 2, spacing=(2.0, 2.0, 2.5))
    assert not cache.is_fresh(source, settings)
    rebuilt = cache.get(source, settings)
    assert not np.array_equal(np.asarray(rebuilt.array), np.asarray(first.array))
    other = cache.get(source, PrepSettings(min_size=(32, 32, 32), intensity=IntensitySettings("none")))
    assert float(np.asarray(other.array).max()) > 1  # other settings, other entry

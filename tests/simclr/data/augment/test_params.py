import math

import numpy as np
import pytest

from simclr.data.augment.params import auto_blur, blur_radius, sample_view_params

N = 20000


@pytest.fixture(scope="module")
def params():
    return sample_view_params(np.arange(N), (60, 80), strength=0.5, blur=True)


def test_crop_boxes_lie_inside_with_official_area_and_aspect(params) -> None:
    p = params
    assert (p.top >= 0).all() and (p.left >= 0).all()
    assert (p.top + p.height <= 60).all() and (p.left + p.width <= 80).all()
    area = p.height * p.width / (60 * 80)
    aspect = p.width / p.height
    whole = (p.height == 60) & (p.width == 80)
    # Rounding to whole pixels moves area/aspect a little past the continuous bounds.
    assert (area[~whole] > 0.07).all() and (area <= 1).all()
    assert (aspect[~whole] > 0.7).all() and (aspect[~whole] < 1.4).all()
    # U[0.08, 1] has median 0.54; rejecting boxes that do not fit (large area with a non-matching aspect)
    # lowers it, as in torchvision's RandomResizedCrop and TF's sample_distorted_bounding_box.
    assert 0.35 < np.median(area[~whole]) < 0.54
    assert (area > 0.9).mean() > 0.01
    assert whole.mean() < 0.05


def test_probabilities_and_factor_ranges(params) -> None:
    p = params
    assert abs(p.flip.mean() - 0.5) < 0.02
    assert abs(p.jitter.mean() - 0.8) < 0.02
    assert abs(p.gray.mean() - 0.2) < 0.02
    assert abs(p.blur.mean() - 0.5) < 0.02
    for f in (p.brightness, p.contrast, p.saturation):
        assert f.min() >= 0.6 - 1e-9 and f.max() <= 1.4 + 1e-9  # 1 -/+ 0.8 * 0.5
        assert abs(f.mean() - 1.0) < 0.01
    assert p.hue.min() >= -0.1 - 1e-9 and p.hue.max() <= 0.1 + 1e-9
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0
    assert (np.sort(p.order, axis=1) == np.arange(4)).all()
    # All 24 jitter orders occur about equally often (random order as official color_jitter_rand).
    codes = p.order @ np.array([64, 16, 4, 1])
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > N / 24 * 0.85


def test_switching_colour_off_keeps_crops_and_flips() -> None:
    a = sample_view_params(np.arange(100), (32, 32), color=True, blur=True)
    b = sample_view_params(np.arange(100), (32, 32), color=False, blur=False)
    np.testing.assert_array_equal(a.top, b.top)
    np.testing.assert_array_equal(a.flip, b.flip)
    assert not b.jitter.any() and not b.gray.any() and not b.blur.any()


def test_strength_zero_never_jitters_and_bad_arguments_raise() -> None:
    assert not sample_view_params(np.arange(50), (8, 8), strength=0).jitter.any()
    with pytest.raises(ValueError, match="strength"):
        sample_view_params([1], (8, 8), strength=-1)
    with pytest.raises(ValueError, match="min_area"):
        sample_view_params([1], (8, 8), min_area=0)
    with pytest.raises(ValueError, match="src_hw"):
        sample_view_params([1], (0, 8))


def test_blur_defaults_follow_the_official_code() -> None:
    assert not auto_blur(32, None) and auto_blur(96, None) and auto_blur(32, True)
    assert blur_radius(224) == 11 and blur_radius(96) == 4 and blur_radius(32) == 1
    assert math.isclose(blur_radius(10), 0)

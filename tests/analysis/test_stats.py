"""The paired-by-seed interval against hand-computed Student-t values."""

from __future__ import annotations

import math

import pytest

from analysis.stats import paired_difference, t_cdf, t_quantile


@pytest.mark.parametrize("df, q", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (30, 2.0423)])
def test_t_quantile_matches_the_table(df: int, q: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-5)


def test_paired_interval_by_hand() -> None:
    # differences 2, 3, 1: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    p = paired_difference({0: 62.0, 1: 64.0, 2: 66.0}, {0: 60.0, 1: 61.0, 2: 65.0})
    assert (p.n, p.seeds, p.mean) == (3, (0, 1, 2), 2.0)
    assert p.lo == pytest.approx(2.0 - 2.4841, abs=1e-4) and p.hi == pytest.approx(2.0 + 2.4841, abs=1e-4)
    assert p.label() == "+2.00 [-0.48, +4.48] (n=3 seeds)"
    assert not p.excludes_zero


def test_only_seeds_on_both_sides_are_paired() -> None:
    p = paired_difference({0: 70.0, 1: 72.0, 5: 99.0}, {0: 60.0, 1: 61.0, 2: 1.0})
    assert p.seeds == (0, 1) and p.unpaired_a == (5,) and p.unpaired_b == (2,)
    assert (p.a_mean, p.b_mean, p.mean) == (71.0, 60.5, 10.5)
    # differences 10, 11: sd 0.7071, half-width 12.7062 * 0.7071 / 1.4142 = 6.3531
    assert p.hi - p.mean == pytest.approx(6.3531, abs=1e-4)


def test_one_seed_has_no_interval() -> None:
    p = paired_difference({0: 70.0}, {0: 60.0})
    assert p.n == 1 and math.isnan(p.lo) and not p.has_interval
    assert p.label() == "+10.00 (n=1 seed, no interval)"
    assert paired_difference({0: 1.0}, {1: 2.0}).label() == "n/a (no seed on both sides)"

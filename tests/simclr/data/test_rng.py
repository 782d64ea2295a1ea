import numpy as np
import pytest

from simclr.data.rng import as_seed_array, mix, uniforms


def test_uniforms_are_a_pure_function_of_seed_and_column() -> None:
    a = uniforms([1, 2, 3], 10)
    b = uniforms([3, 2, 1], 20)
    assert a.shape == (3, 10)
    np.testing.assert_array_equal(a[0], b[2, :10])  # column c never depends on n or batch position
    np.testing.assert_array_equal(a[2], b[0, :10])
    assert not np.array_equal(a[0], a[1])
    assert ((a >= 0) & (a < 1)).all()


def test_uniforms_look_uniform_and_uncorrelated_across_consecutive_seeds() -> None:
    u = uniforms(np.arange(20000), 4)
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03


def test_negative_and_large_seeds_and_mix() -> None:
    assert as_seed_array([-1])[0] == np.uint64(2**64 - 1)
    assert uniforms([-1], 2).shape == (1, 2)
    assert mix(1, 2) == mix(1, 2) != mix(2, 1)
    assert 0 <= mix(5, 2**70) < 2**63
    with pytest.raises(ValueError, match="integers"):
        uniforms([0.5], 1)

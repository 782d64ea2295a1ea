import numpy as np
import pytest

from simclr.data.loading.order import epoch_permutation, rank_batches, steps_per_epoch
from simclr.data.shards.keys import key_hashes

KEYS = key_hashes([f"k{i}" for i in range(103)])


def test_permutation_is_a_pure_function_of_seed_epoch_and_keys() -> None:
    a = epoch_permutation(KEYS, 0, 0)
    assert sorted(a.tolist()) == list(range(103))
    np.testing.assert_array_equal(a, epoch_permutation(KEYS.copy(), 0, 0))
    assert not np.array_equal(a, epoch_permutation(KEYS, 0, 1))
    assert not np.array_equal(a, epoch_permutation(KEYS, 1, 0))
    # The order follows the keys, not their storage position: reversing storage reverses the indices only.
    rev = epoch_permutation(KEYS[::-1].copy(), 0, 0)
    np.testing.assert_array_equal(102 - rev, a)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("drop_last", [True, False])
def test_every_rank_gets_the_same_number_of_full_batches(world: int, drop_last: bool) -> None:
    perm = epoch_permutation(KEYS, 3, 2)
    batch = 7
    cuts = [rank_batches(perm, batch_size=batch, world_size=world, rank=r, drop_last=drop_last) for r in range(world)]
    steps = steps_per_epoch(103, batch, world, drop_last)
    assert all(rows.shape == (steps, batch) for rows, _ in cuts)
    rows = np.concatenate([r[v] for r, v in cuts])
    if drop_last:
        assert len(rows) == steps * batch * world and len(set(rows.tolist())) == len(rows)  # no repeats
    else:
        assert sorted(rows.tolist()) == list(range(103))  # the valid slots hold every sample exactly once


def test_padding_when_the_data_is_smaller_than_one_global_batch() -> None:
    perm = epoch_permutation(KEYS[:3], 0, 0)
    rows, valid = rank_batches(perm, batch_size=4, world_size=2, rank=1, drop_last=False)
    assert rows.shape == (1, 4) and not valid.any()
    assert steps_per_epoch(3, 4, 2, True) == 0

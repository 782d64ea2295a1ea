"""The sample order of an epoch and how it is cut into equal per-rank batches — pure functions.

Order: sample i of epoch e goes to position ``rank of hash(key_i, seed, e)`` — a pure function of (seed, epoch,
the set of keys), so it does not depend on worker count, world size, shard layout, or restart history.

Cutting (global batch G = batch_size * world_size; N samples):

- ``drop_last=True`` (training): ``N // G`` steps; the last ``N mod G`` samples of this epoch's permutation are
  not used this epoch (a different random few each epoch, so every sample is seen over the epochs).
- ``drop_last=False`` (evaluation): ``ceil(N / G)`` steps; the permutation is padded by repeating its first
  samples, and the padded slots are marked ``valid=False`` — every sample appears exactly once among the valid
  slots of an epoch.

Step s of rank r holds positions ``s*G + r*B .. s*G + (r+1)*B`` of the (padded) permutation, so every rank has
exactly the same number of equally sized batches — no DDP rank waits for a batch that never comes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from simclr.data.rng import mix, splitmix64


def epoch_permutation(key_ids: npt.NDArray[np.uint64], seed: int, epoch: int) -> npt.NDArray[np.int64]:
    """Indices ``0..N-1`` in the order of epoch ``epoch`` (``key_ids``: stable 64-bit hashes of the keys)."""
    salt = np.uint64(mix(seed, epoch, 0x5EED))
    return np.argsort(splitmix64(key_ids ^ salt), kind="stable").astype(np.int64)


def steps_per_epoch(n: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Batches per epoch per rank (the same on every rank)."""
    g = batch_size * world_size
    return n // g if drop_last else -(-n // g)


def rank_batches(
    perm: npt.NDArray[np.int64],
    *,
    batch_size: int,
    world_size: int,
    rank: int,
    drop_last: bool,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """``(rows [steps, batch_size], valid [steps, batch_size])`` of this rank for one epoch."""
    n = perm.shape[0]
    g = batch_size * world_size
    steps = steps_per_epoch(n, batch_size, world_size, drop_last)
    need = steps * g
    valid = np.arange(need) < n
    seq = perm[:need] if need <= n else np.resize(perm, need)  # np.resize repeats from the start
    seq = seq.reshape(steps, world_size, batch_size)[:, rank]
    return seq.copy(), valid.reshape(steps, world_size, batch_size)[:, rank].copy()

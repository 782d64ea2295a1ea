"""Counter-based random numbers: uniforms as a pure function of (seed, counter), vectorised over seeds.

Why not ``torch.Generator`` / ``numpy.random.Generator``: docs/DESIGN.md principle 4 wants every random choice to be
a function of (seed, epoch, sample key, view) only. A counter-based generator gives that for free — the n-th
uniform of a view is ``hash(view_seed, n)`` — and a whole batch of views is one vectorised numpy expression,
so the per-sample PIL path and the batched tensor path draw *identical* parameters from the same seeds.
Creating one stateful generator per sample would cost more than the hashing and could drift across library
versions. The mixer is SplitMix64 (Steele, Lea & Flood 2014), which passes BigCrush as a counter-based generator.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK63 = (1 << 63) - 1


def splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser applied elementwise (uint64 arithmetic wraps modulo 2**64 on purpose)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def as_seed_array(seeds: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """Seeds (any int64/uint64/Python ints, shape ``[B]``) as uint64, reinterpreting negatives bitwise."""
    a = np.asarray(seeds)
    if a.dtype.kind not in "iu":
        raise ValueError(f"seeds must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "i":
        a = a.astype(np.int64).view(np.uint64)
    return a.astype(np.uint64).reshape(-1)


def uniforms(seeds: npt.ArrayLike, n: int) -> npt.NDArray[np.float64]:
    """``[B, n]`` uniforms in [0, 1): row b, column c is a pure function of (seeds[b], c).

    Column c never depends on n, so adding a new parameter at the end never changes the existing ones.
    """
    s = splitmix64(as_seed_array(seeds))[:, None]
    c = np.arange(1, n + 1, dtype=np.uint64)[None, :] * _GOLDEN
    z = splitmix64(s ^ c)
    # The top 53 bits give an exactly representable double in [0, 1).
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def mix(*parts: int) -> int:
    """A non-negative 63-bit integer mixed from integer parts (order matters); for derived seeds."""
    h = np.zeros(1, dtype=np.uint64)
    for p in parts:
        h = splitmix64(h ^ as_seed_array([p & 0xFFFFFFFFFFFFFFFF]))
    return int(h[0]) & _MASK63

"""The statistics behind every comparison the report prints: a paired-by-seed mean difference with a
95% Student-t interval.

Two groups of runs are compared seed by seed (the same seed on both sides shares its label subset, its data
order and its initialisation noise), so the interval is that of the mean of the per-seed differences
``d_s = a_s - b_s``: ``mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n)``. With one pair there is no interval (n=1
is shown as such). The t quantile is computed here (no scipy in the suite): the regularised incomplete
beta function by its continued fraction (Numerical Recipes 6.4), inverted by bisection.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["t_cdf", "t_quantile", "Paired", "paired_difference"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
            last = d * c
        if abs(last - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(ln)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@functools.lru_cache(maxsize=256)  # a report asks for a few (p, df) pairs, once per run
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``t_quantile(0.975, 2)`` = 4.303)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Paired:
    """A paired-by-seed difference ``a - b``: ``mean``, the 95% interval ``(lo, hi)`` (NaN with n < 2), ``n`` pairs,
    the ``seeds`` paired, the seeds each side had without a partner, and each side's mean over the PAIRED seeds."""

    mean: float
    lo: float
    hi: float
    n: int
    seeds: tuple[int, ...]
    a_mean: float
    b_mean: float
    unpaired_a: tuple[int, ...] = ()
    unpaired_b: tuple[int, ...] = ()

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.lo)

    @property
    def excludes_zero(self) -> bool:
        """The 95% interval lies wholly on one side of 0 (False without an interval)."""
        return self.has_interval and (self.lo > 0 or self.hi < 0)

    def label(self, digits: int = 2) -> str:
        """``+27.77 [+24.10, +31.44] (n=3 seeds)``; ``+27.77 (n=1 seed, no interval)``; ``n/a (no seed on both sides)``."""
        if self.n == 0:
            return "n/a (no seed on both sides)"
        head = f"{self.mean:+.{digits}f}"
        if self.has_interval:
            return f"{head} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}] (n={self.n} seeds)"
        return f"{head} (n={self.n} seed, no interval)"


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> Paired:
    """``a - b`` paired by seed (``{seed: value}`` each; NaN values are dropped). See the module docstring."""
    fa = {int(s): float(v) for s, v in a.items() if v is not None and math.isfinite(float(v))}
    fb = {int(s): float(v) for s, v in b.items() if v is not None and math.isfinite(float(v))}
    seeds = tuple(sorted(set(fa) & set(fb)))
    ua, ub = tuple(sorted(set(fa) - set(fb))), tuple(sorted(set(fb) - set(fa)))
    n = len(seeds)
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, 0, (), math.nan, math.nan, ua, ub)
    d = [fa[s] - fb[s] for s in seeds]
    mean = sum(d) / n
    am, bm = sum(fa[s] for s in seeds) / n, sum(fb[s] for s in seeds) / n
    if n < 2:
        return Paired(mean, math.nan, math.nan, n, seeds, am, bm, ua, ub)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return Paired(mean, mean - half, mean + half, n, seeds, am, bm, ua, ub)

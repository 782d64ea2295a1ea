"""Did a run converge? A documented rule on the run's own ``metrics.jsonl`` (docs/CONTRACTS.md "Convergence").

The rule needs nothing but what every run folder written by the training loop already holds (the train
series logged every ``train.log_every`` steps, the config), so sweeps written before it existed are judged too.
A run is **not converged** when either test fires:

1. *Still improving.* Over the last quarter of its logged steps, the least-squares line through the train loss
   (``contrastive_loss`` for pretraining) still falls by more than its noise, the 95% t-interval half-width of
   that fitted drop, AND by more than ``STILL_FALLING_SHARE`` (10%) of the run's whole drop (mean of the
   first quarter minus the fitted end). A loss that still gives a tenth of its progress in the last quarter
   has not reached its plateau; a smaller residual slope (a cosine schedule's tail) is not flagged.
2. *Underfit on a small labelled set* (``finetune`` and ``supervised``: stages that train every weight on
   labels). On at most ``SMALL_SET`` (10,000) labelled images an over-parameterised network fits its training
   set (Zhang et al. 2017), so its train top-1 plateaus near 100%. A mean train top-1 over the last quarter
   below ``UNDERFIT_TOP1`` (90%) means it stopped well below that plateau.

**Unknown** when the run has not finished, or, unless test 2 fired, when it logged fewer than ``MIN_POINTS`` (8)
train-loss points or its last quarter holds fewer than ``MIN_TAIL`` (4): too little to tell a slope from noise.
(Test 2 needs no slope: a mean far below 90% shows in a few points.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from simclr.runfolder.metrics import MetricSeries
from analysis.stats import t_quantile

__all__ = ["Convergence", "assess", "labelled_set_size", "cut_by_max_steps", "train_config", "MIN_POINTS", "MIN_TAIL", "STILL_FALLING_SHARE",
           "SMALL_SET", "UNDERFIT_TOP1"]

MIN_POINTS = 8
MIN_TAIL = 4
STILL_FALLING_SHARE = 0.10
SMALL_SET = 10_000
UNDERFIT_TOP1 = 90.0
# Stages that train every weight on labelled images (rule 2); linear eval trains a linear layer only, and
# distillation learns from the teacher's soft labels, where neither plateau is near 100%.
_FIT_STAGES = ("finetune", "supervised")


@dataclass(frozen=True)
class Convergence:
    """``converged``: True / False / None (unknown); ``note``: why, in one line (empty when converged)."""

    converged: bool | None
    note: str

    @property
    def label(self) -> str:
        return "unknown" if self.converged is None else ("true" if self.converged else "false")


def _tail(series: MetricSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, values) of the last quarter of the logged steps, and the values of the first quarter."""
    s, v = series.steps.astype(np.float64), series.values.astype(np.float64)
    ok = np.isfinite(v)
    s, v = s[ok], v[ok]
    first, last = s.min(), s.max()
    span = last - first
    return s[s >= last - 0.25 * span], v[s >= last - 0.25 * span], v[s <= first + 0.25 * span]


def _still_falling(series: MetricSeries, name: str) -> str | None:
    """Rule 1 on one loss series: a note when it still falls, None when it does not."""
    ts, tv, head = _tail(series)
    m = ts.size
    x = ts - ts.mean()
    sxx = float((x * x).sum())
    if sxx <= 0:
        return None
    slope = float((x * (tv - tv.mean())).sum() / sxx)
    resid = tv - (tv.mean() + slope * x)
    se = math.sqrt(float((resid * resid).sum()) / (m - 2) / sxx)
    span = float(ts.max() - ts.min())
    drop = -slope * span  # fitted fall over the last quarter (> 0: falling)
    end = tv.mean() + slope * (ts.max() - ts.mean())
    whole = float(head.mean()) - end
    if not (whole > 0 and drop > STILL_FALLING_SHARE * whole):  # the cheap test first: most runs stop here
        return None
    noise = t_quantile(0.975, m - 2) * se * span
    if drop > noise:
        return (f"train {name} still falling: -{drop:.3g} over the last quarter of steps "
                f"({100 * drop / whole:.0f}% of its whole drop; noise ±{noise:.2g})")
    return None


def train_config(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``train`` part of a resolved config (empty when missing)."""
    raw = cfg.get("train")
    return raw if isinstance(raw, Mapping) else {}


def cut_by_max_steps(cfg: Mapping[str, Any], total_steps: Any) -> bool:
    """Whether ``train.max_steps`` set the run's length (then its configured epochs were not all run)."""
    cap = train_config(cfg).get("max_steps") or 0
    return bool(cap) and isinstance(total_steps, (int, float)) and total_steps >= cap


def labelled_set_size(cfg: Mapping[str, Any], total_steps: float) -> float:
    """The labelled images of a classifier run, from its budget: ``total_steps × train.batch_size / train.epochs``
    (a lower bound by less than one batch, since each epoch drops its last partial batch); NaN when the run was
    cut by ``train.max_steps`` (then the epochs do not tell the set) or the config lacks the keys."""
    train = train_config(cfg)
    b, e = train.get("batch_size"), train.get("epochs")
    if not (isinstance(b, (int, float)) and isinstance(e, (int, float)) and b > 0 and e > 0 and total_steps > 0):
        return math.nan
    if cut_by_max_steps(cfg, total_steps):
        return math.nan
    return float(total_steps) * float(b) / float(e)


def assess(stage: str | None, state: str, series: Mapping[tuple[str, str], MetricSeries],
           cfg: Mapping[str, Any], total_steps: float) -> Convergence:
    """The rule of the module docstring for one run: ``series`` by (split, name) as
    ``simclr.runfolder.metrics.read_metrics`` gives them, ``cfg`` the run's config, ``total_steps`` its steps."""
    if state != "done":
        return Convergence(None, "run not finished")
    notes = []
    top1 = series.get(("train", "top1"))
    size = labelled_set_size(cfg, total_steps)
    if stage in _FIT_STAGES and top1 is not None and size == size and size <= SMALL_SET:
        _, tv, _ = _tail(top1)
        if tv.size and float(tv.mean()) < UNDERFIT_TOP1:
            notes.append(f"train top-1 {tv.mean():.1f}% on about {size:.0f} labelled images "
                         f"(a network fits a set this small: >= {UNDERFIT_TOP1:.0f}% expected)")
    name = "contrastive_loss" if stage == "pretrain" and ("train", "contrastive_loss") in series else "loss"
    loss = series.get(("train", name))
    n = 0 if loss is None else int(np.isfinite(loss.values).sum())
    short = None
    if loss is None or n < MIN_POINTS:
        short = f"{n} train {name} points logged; the rule needs {MIN_POINTS}"
    elif (tail := _tail(loss)[0].size) < MIN_TAIL:
        short = f"{tail} train {name} points in the last quarter; the rule needs {MIN_TAIL}"
    if short is not None:  # too short to tell a slope from noise; an underfit set still tells
        return Convergence(False, notes[0]) if notes else Convergence(None, short)
    assert loss is not None
    falling = _still_falling(loss, name)
    if falling:
        notes.append(falling)
    return Convergence(False, "; ".join(notes)) if notes else Convergence(True, "")

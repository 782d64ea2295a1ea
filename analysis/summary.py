"""A few plain lines with the sweep's headline comparisons (printed by the demo and in the report).

The first line is the headline: the first comparison that holds (``analysis.compare``: both sides converged,
equal budgets where they should be, two seeds or more), or one plain line saying that none does and why. Then
the five comparisons SimCLRv2 draws, one line each, in this order, each with its paired interval, both sides'
budgets and its flags (``⚑ FLAGGED: ...``), or a line saying why it cannot be made from these runs:

1. the best fine-tuned top-1 at the smallest label fraction vs the supervised baseline;
2. the semi-supervised gain at each label fraction (the paper: largest with the fewest labels);
3. fine-tuning from head layer 1 vs layer 0 (section 4.2: from the middle of the head is better);
4. distillation: student vs its teacher and vs a supervised model of the student's size;
5. model size: the fine-tuned top-1 of the other models against the smallest one.

Then the pretraining kNN against the same kNN on raw pixels (``analysis.baselines``), and a line counting the
runs left out of the numbers, only when there are some.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis.baselines import PixelKnn, pixel_knn_of_pretraining
from analysis.compare import FLAG_MARK, Comparison, comparisons
from analysis.groups import metric_series
from analysis.labels import fraction_label, model_label

__all__ = ["summarize", "headline", "pixel_line"]


def _smallest_fraction(comps: list[Comparison]) -> list[Comparison]:
    if not comps:
        return comps
    f = min(float(c.keys["label_fraction"]) for c in comps)
    return [c for c in comps if np.isclose(float(c.keys["label_fraction"]), f)]


def _best(comps: list[Comparison]) -> Comparison:
    """The comparison whose first side scores highest (the best fine-tuned group), holding ones first."""
    return max(comps, key=lambda c: (c.holds, c.diff.a_mean if c.diff.n else -np.inf))


def headline(comps: list[Comparison]) -> str:
    """The first comparison that holds, or one plain line saying that none does and why."""
    holding = [c for c in comps if c.holds]
    if holding:
        return "Headline (holds: converged, equal budgets, several seeds): " + _best(holding).line()
    if not comps:
        return "Headline: none (no two groups of finished runs to compare)"
    why: Counter[str] = Counter()
    for c in comps:
        why.update({f.kind for f in c.flags})
    said = {"not converged": "a side not converged"}
    parts = ", ".join(f"{n} with {said.get(w, w)}" for w, n in why.most_common())
    return (f"Headline: none of the {len(comps)} comparisons holds ({parts}); every number below is flagged "
            f"{FLAG_MARK} and is not a result")


def _finetune_line(comps: list[Comparison]) -> str:
    mine = _smallest_fraction([c for c in comps if c.kind == "finetune_vs_supervised"])
    if not mine:
        return "Fine-tuned vs supervised: n/a (needs fine-tuned and supervised runs of the same model and fraction)"
    return "Best " + _best(mine).line()


def _gain_line(comps: list[Comparison]) -> str:
    mine = [c for c in comps if c.kind == "finetune_vs_supervised" and c.diff.n]
    if not mine:
        return "Semi-supervised gain: n/a (needs fine-tuned and supervised runs of the same model and fraction)"
    per: dict[float, Comparison] = {}
    for c in mine:
        f = float(c.keys["label_fraction"])
        if f not in per or (c.holds, c.diff.a_mean) > (per[f].holds, per[f].diff.a_mean):
            per[f] = c
    parts = [f"{c.diff.label()} at {fraction_label(f)}{' ' + FLAG_MARK if c.flags else ''}"
             for f, c in sorted(per.items())]
    line = "Semi-supervised gain over supervised (best fine-tuned group per fraction): " + ", ".join(parts)
    fs = sorted(per)
    if len(fs) >= 2:
        lo, hi = per[fs[0]], per[fs[1]]
        larger = lo.diff.mean > hi.diff.mean
        held = lo.holds and hi.holds
        line += ("; larger at " if larger else "; NOT larger at ") + (
            f"{fraction_label(fs[0])} than at {fraction_label(fs[1])}"
            + (", as SimCLRv2 reports" if larger else " (SimCLRv2 expects it to be)"))
        if not held:
            line += f" — {FLAG_MARK} flagged comparisons, not a result"
    return line


def _lines_of(comps: list[Comparison], kinds: tuple[str, ...], empty: str, prefix: str = "") -> str:
    """Every comparison of ``kinds`` on one line, or ``empty``."""
    mine = [c for c in comps if c.kind in kinds]
    return prefix + " | ".join(c.line() for c in mine) if mine else empty


def pixel_line(runs: pd.DataFrame, pixel: Mapping[str, PixelKnn]) -> str:
    """The pretraining kNN of each pretrained model beside the same kNN on raw pixels."""
    use = runs[runs["usable"].astype(bool) & (runs["stage"] == "pretrain")] if not runs.empty else runs
    if use.empty:
        return "Pretraining kNN vs raw pixels: n/a (no finished pretraining runs)"
    knn = metric_series(use, "knn_top1")
    parts, below = [], 0
    base = [t for p in pixel.values() if (t := p.top1) is not None]
    for (d, w, s), g in use.assign(knn=knn).groupby(["depth", "width", "sk_ratio"], dropna=False, sort=True):
        vals = g["knn"].dropna()
        if vals.empty:
            continue
        pix = [t for p in g["path"] if p in pixel and (t := pixel[p].top1) is not None]
        mean = float(vals.mean())
        text = f"{model_label(d, w, s)} {mean:.2f}"
        if pix:
            below += mean < float(np.mean(pix))
        parts.append(text)
    if not parts:
        return "Pretraining kNN vs raw pixels: n/a (no pretraining run logged a kNN top-1)"
    if not base:
        why = next((p.why_missing for p in pixel.values() if p.why_missing), "no pretraining config")
        return f"Pretraining kNN top-1: {', '.join(parts)}; raw-pixel baseline n/a ({why})"
    line = (f"Pretraining kNN top-1: {', '.join(parts)} vs {float(np.mean(base)):.2f} on raw pixels "
            "(the same kNN, memory bank and test set)")
    if below:
        line += f"; {below} model(s) below pixels: their features are worse than the raw images"
    return line


def summarize(df: pd.DataFrame, pixel: Mapping[str, PixelKnn] | None = None,
              comps: list[Comparison] | None = None) -> list[str]:
    """The headline, the five comparison lines, the pixel-kNN line (see the module docstring), from a runs table
    made by ``analysis.collect.collect(...).runs``; a last line when some runs are not in the numbers.
    ``pixel``: the pixel-kNN baselines by pretraining run path (default: computed or read from the cache)."""
    if df.empty:
        return ["No runs found."]
    comps = comparisons(df) if comps is None else comps
    pixel = pixel_knn_of_pretraining(df) if pixel is None else pixel
    lines = [
        headline(comps),
        _finetune_line(comps),
        _gain_line(comps),
        _lines_of(comps, ("head_layer",), "Fine-tune from head layer 1 vs 0: n/a (no fine-tuned pairs differing only "
                                          "in ft_proj_selector)"),
        _lines_of(comps, ("distill_vs_teacher", "distill_vs_supervised"),
                  "Distillation: n/a (no finished distillation runs)", "Distillation: "),
        _lines_of(comps, ("across_models",), "Model size: n/a (no fine-tuned groups differing only in the model)"),
        pixel_line(df, pixel),
    ]
    left = _left_out(df)
    return lines + ([left] if left else [])


def _left_out(runs: pd.DataFrame) -> str | None:
    out = runs[~runs["usable"].astype(bool)]
    if out.empty:
        return None
    parts = [f"{n} {state}" for state, n in out["state"].value_counts().sort_index().items()]
    no_cfg = int((~out["has_config"].astype(bool)).sum())
    if no_cfg:
        parts.append(f"{no_cfg} without a config")
    dup = int(out["duplicate_of"].notna().sum()) if "duplicate_of" in out else 0
    if dup:
        parts.append(f"{dup} duplicate(s)")
    return f"Not in these numbers: {len(out)} run(s) ({', '.join(parts)}); see the report"

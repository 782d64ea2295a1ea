"""The sweep's comparisons, each with its terms: both sides' budgets, the seeds, a paired interval, and flags.

A comparison is two groups of usable runs that differ in one thing (fine-tuned vs supervised, head layer 1 vs 0,
student vs teacher, one model vs another, SimCLRv2's memory in the pretraining vs none). Its number is the paired-by-seed mean difference with a 95%
t-interval (:func:`analysis.stats.paired_difference`). It is **flagged**, and never headlined, when

- a side is not converged, or its convergence is unknown (``analysis.convergence``: docs/CONTRACTS.md
  "Convergence");
- the two sides' budgets differ where the comparison means them to be equal: pretraining steps of the backbones
  (across models, between head layers), or labelled optimizer steps / images seen (fine-tuned vs supervised,
  across models, between head layers), by more than ``BUDGET_TOLERANCE``;
- it rests on one seed (no interval);
- a distilled student was stopped by ``train.max_steps`` within its first epoch of the unlabelled images.

Every side states its budget: optimizer steps, epochs, labelled images seen, and the pretraining steps of the
backbone it came from (``runs`` columns ``step``, ``epochs_done``, ``labelled_images_seen``, ``pretrain_steps``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from analysis.groups import BACKBONE, MEMORY, STAGE_KEYS, keys_frame
from analysis.labels import fraction_label, head_label, is_missing, memory_label, model_label
from analysis.stats import Paired, paired_difference

__all__ = ["Side", "Comparison", "Flag", "comparisons", "BUDGET_TOLERANCE", "FLAG_MARK"]

BUDGET_TOLERANCE = 0.01  # relative: budgets within 1% (a dropped last batch) count as equal
FLAG_MARK = "⚑"


class Flag(str):
    """Why a comparison does not hold: the text shown, and its ``kind`` (``not converged``, ``convergence unknown``,
    ``unequal budgets``, ``a short budget``, ``one seed``) for counting. Equal to its text."""

    kind: str

    def __new__(cls, kind: str, text: str) -> "Flag":
        flag = super().__new__(cls, text)
        flag.kind = kind
        return flag


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _count(x: float, unit: str = "") -> str:
    if not math.isfinite(x):
        return "?"
    text = f"{x / 1000:.1f}k" if x >= 10_000 else f"{x:.0f}"
    return text + unit


@dataclass(frozen=True)
class Side:
    """One side of a comparison: its runs' test top-1 by seed and their budget (means over the runs)."""

    label: str
    values: dict[int, float]
    converged: str  # "true" when every run is, "false" when any is not, else "unknown"
    note: str  # the first not-converged run's note
    steps: float
    epochs: float
    labelled: float
    pretrain_steps: float

    def budget(self) -> str:
        """``135 steps, 15.0 epochs, 8.6k labelled images, backbone pretrained 234 steps``."""
        parts = [f"{_count(self.steps)} steps"]
        if math.isfinite(self.epochs):
            parts.append(f"{self.epochs:.3g} epochs")
        parts.append(f"{_count(self.labelled)} labelled images")
        if math.isfinite(self.pretrain_steps) and self.pretrain_steps > 0:
            parts.append(f"backbone pretrained {_count(self.pretrain_steps)} steps")
        elif self.pretrain_steps == 0:
            parts.append("no pretraining")
        return ", ".join(parts)


def side(label: str, rows: pd.DataFrame) -> Side:
    """A :class:`Side` from usable run rows (one per seed; a repeated seed keeps its first run)."""
    rows = rows.drop_duplicates("seed")
    vals = {int(s): _num(v) for s, v in zip(rows["seed"], rows["top1"]) if not is_missing(s) and
            math.isfinite(_num(v))}
    conv = rows["converged"].astype(str).tolist() if "converged" in rows else []
    state = "false" if "false" in conv else ("true" if conv and all(c == "true" for c in conv) else "unknown")
    notes = [str(n) for c, n in zip(conv, rows.get("convergence_note", pd.Series([""] * len(rows))))
             if c != "true" and isinstance(n, str) and n]

    def mean(col: str) -> float:
        return float(pd.to_numeric(rows[col], errors="coerce").mean()) if col in rows else math.nan

    return Side(label, vals, state, notes[0] if notes else "", mean("step"), mean("epochs_done"),
                mean("labelled_images_seen"), mean("pretrain_steps"))


def _differ(a: float, b: float) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) > BUDGET_TOLERANCE * max(abs(a), abs(b), 1.0)


@dataclass(frozen=True)
class Comparison:
    """``a`` minus ``b`` (test top-1, points), paired by seed, with the flags of the module docstring."""

    kind: str
    what: str
    a: Side
    b: Side
    diff: Paired
    flags: tuple[Flag, ...]
    keys: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return not self.flags and self.diff.n > 0

    @property
    def marker(self) -> str:
        return FLAG_MARK if self.flags else ""

    def terms(self) -> str:
        return f"{self.a.label}: {self.a.budget()}; {self.b.label}: {self.b.budget()}"

    def line(self) -> str:
        """One line: what, the paired difference with its interval, both sides' means and budgets, the flags."""
        text = (f"{self.what}: {self.diff.label()} points ({self.a.label} {self.diff.a_mean:.2f} vs "
                f"{self.b.label} {self.diff.b_mean:.2f}; {self.terms()})")
        return text + (f" {FLAG_MARK} FLAGGED: " + "; ".join(self.flags) if self.flags else "")


def _flags(a: Side, b: Side, diff: Paired, budgets: Sequence[str]) -> tuple[Flag, ...]:
    out = []
    for s in (a, b):
        why = f" ({s.note})" if s.note else ""
        if s.converged == "false":
            out.append(Flag("not converged", f"{s.label} not converged{why}"))
        elif s.converged == "unknown":
            out.append(Flag("convergence unknown", f"{s.label}: convergence unknown{why}"))
    if "pretrain" in budgets and _differ(a.pretrain_steps, b.pretrain_steps):
        out.append(Flag("unequal budgets", f"budgets differ: pretraining {_count(a.pretrain_steps)} vs "
                                           f"{_count(b.pretrain_steps)} steps"))
    if "labelled" in budgets:
        if _differ(a.labelled, b.labelled):
            out.append(Flag("unequal budgets", f"budgets differ: {_count(a.labelled)} vs {_count(b.labelled)} "
                                               "labelled images seen"))
        elif _differ(a.steps, b.steps):
            out.append(Flag("unequal budgets", f"budgets differ: {_count(a.steps)} vs {_count(b.steps)} labelled steps"))
    if diff.n == 0:
        out.append(Flag("one seed", "no seed on both sides"))
    elif diff.n == 1:
        out.append(Flag("one seed", "one seed: no interval"))
    return tuple(out)


def _compare(kind: str, what: str, a: Side, b: Side, budgets: Sequence[str], keys: dict[str, Any],
             extra: tuple[Flag, ...] = ()) -> Comparison:
    diff = paired_difference(a.values, b.values)
    return Comparison(kind, what, a, b, diff, _flags(a, b, diff, budgets) + extra, keys)


def _groups(runs: pd.DataFrame, stage: str, keys: Sequence[str]) -> list[tuple[dict[str, float], pd.DataFrame]]:
    sub = runs[runs["stage"] == stage]
    if sub.empty:
        return []
    kf = keys_frame(sub, keys)
    out = []
    by = list(keys) if len(keys) > 1 else keys[0]  # one key: scalar group keys (pandas warns on a 1-list)
    for key, idx in kf.groupby(by, dropna=False, sort=True).groups.items():
        vals = key if isinstance(key, tuple) else (key,)
        out.append((dict(zip(keys, (float(v) for v in vals))), sub.loc[idx]))
    return out


def _match(runs: pd.DataFrame, stage: str, want: dict[str, float]) -> pd.DataFrame:
    sub = runs[runs["stage"] == stage]
    if sub.empty:
        return sub
    kf = keys_frame(sub, list(want))
    ok = np.ones(len(sub), dtype=bool)
    for k, v in want.items():
        col = kf[k].to_numpy()
        ok &= np.isnan(col) if math.isnan(v) else np.isclose(col, v)
    return sub[ok]


def _model(k: dict[str, Any], prefix: str = "") -> str:
    return model_label(k.get(prefix + "depth"), k.get(prefix + "width"), k.get(prefix + "sk_ratio"))


def _finetune_vs_supervised(runs: pd.DataFrame) -> list[Comparison]:
    out = []
    for k, ft in _groups(runs, "finetune", STAGE_KEYS["finetune"]):
        sup = _match(runs, "supervised", {c: k[c] for c in (*BACKBONE, "label_fraction")})
        if sup.empty:
            continue
        what = (f"{fraction_label(k['label_fraction'])} labels, {_model(k)} "
                f"{head_label(k['num_proj_layers'], k['ft_proj_selector'])}: fine-tuned − supervised")
        out.append(_compare("finetune_vs_supervised", what, side("fine-tuned", ft), side("supervised", sup),
                            ("labelled",), k))
    return out


def _head_layer(runs: pd.DataFrame) -> list[Comparison]:
    out = []
    keys = [c for c in STAGE_KEYS["finetune"] if c != "ft_proj_selector"]
    for k, ft in _groups(runs, "finetune", keys):
        sel = pd.to_numeric(ft["ft_proj_selector"], errors="coerce")
        one, zero = ft[sel == 1], ft[sel == 0]
        if one.empty or zero.empty:
            continue
        what = (f"{fraction_label(k['label_fraction'])} labels, {_model(k)} head {k['num_proj_layers']:.0f}: "
                f"fine-tune from head layer 1 − layer 0")
        out.append(_compare("head_layer", what, side("layer 1", one), side("layer 0", zero),
                            ("pretrain", "labelled"), k))
    return out


def _distill(runs: pd.DataFrame) -> list[Comparison]:
    out = []
    for k, d in _groups(runs, "distill", STAGE_KEYS["distill"]):
        teach = runs[runs["path"].isin(set(d["teacher_path"].dropna()))]
        # The teachers' convergence and budget, with each student's own teacher's top-1 under the student's seed.
        students_teachers = d.assign(top1=pd.to_numeric(d["teacher_top1"], errors="coerce"))
        t_side = replace(side(f"teacher {_model(k, 'teacher_')}", teach),
                         values=side("", students_teachers).values)
        frac = k["teacher_label_fraction"] if not math.isnan(k["teacher_label_fraction"]) else k["label_fraction"]
        base = f"distilled {_model(k)} from {_model(k, 'teacher_')} ({fraction_label(frac)} labels)"
        student = side(f"student {_model(k)}", d)
        short = _under_one_epoch(d, student)
        out.append(_compare("distill_vs_teacher", base + ": student − teacher", student, t_side, (), k, short))
        sup = _match(runs, "supervised", {**{c: k[c] for c in BACKBONE}, "label_fraction": frac})
        if not sup.empty:
            out.append(_compare("distill_vs_supervised", base + ": student − supervised", student,
                                side(f"supervised {_model(k)}", sup), (), k, short))
    return out


def _under_one_epoch(rows: pd.DataFrame, s: Side) -> tuple[Flag, ...]:
    """A student that ``train.max_steps`` stopped within its first pass over the unlabelled images: its gap to the
    teacher says how far it got, not where distillation leads (the paper distils for hundreds of epochs)."""
    first = pd.to_numeric(rows["epoch"], errors="coerce") == 0  # progress.json's epoch index at the end
    if not (rows["cut_by_max_steps"].astype(bool) & first).any():
        return ()
    seen = float(pd.to_numeric(rows["images_seen"], errors="coerce").mean())
    return (Flag("a short budget", "budgets short: train.max_steps stopped the student within its first epoch of "
                                   f"the unlabelled images ({_count(s.steps)} steps, {_count(seen)} images)"),)


def _across_models(runs: pd.DataFrame) -> list[Comparison]:
    """Fine-tuned groups alike in all but the backbone, at each label fraction: the smallest model vs each other."""
    out = []
    rest = [c for c in STAGE_KEYS["finetune"] if c not in BACKBONE]
    for k, ft in _groups(runs, "finetune", rest):
        models = _groups(ft, "finetune", BACKBONE)
        if len(models) < 2:
            continue
        models.sort(key=lambda m: (float(pd.to_numeric(m[1]["params"], errors="coerce").mean()), m[0]["depth"]))
        (k0, base), others = models[0], models[1:]
        for km, frame in others:
            what = (f"{fraction_label(k['label_fraction'])} labels, "
                    f"{head_label(k['num_proj_layers'], k['ft_proj_selector'])}: fine-tuned {_model(km)} − "
                    f"{_model(k0)}")
            out.append(_compare("across_models", what, side(_model(km), frame), side(_model(k0), base),
                                ("pretrain", "labelled"), {**k, **km}))
    return out


def _memory(runs: pd.DataFrame) -> list[Comparison]:
    """Fine-tuned and linear-eval groups alike in all but the pretraining's memory: each memory size vs none (SimCLRv2
    sec. 2: the memory adds about 1% on top of large batches). Equal pretraining steps and labelled budgets."""
    out = []
    for stage in ("finetune", "linear_eval"):
        rest = [c for c in STAGE_KEYS[stage] if c not in MEMORY]
        for k, frame in _groups(runs, stage, rest):
            sizes = _groups(frame, stage, MEMORY)
            none = [g for km, g in sizes if km["memory_size"] == 0]
            if not none:
                continue
            for km, g in sizes:
                if not km["memory_size"] > 0:
                    continue
                what = (f"{fraction_label(k['label_fraction'])} labels, {_model(k)} "
                        f"{head_label(k['num_proj_layers'], k['ft_proj_selector'])}, "
                        f"{'fine-tuned' if stage == 'finetune' else 'linear eval'}: "
                        f"{memory_label(km['memory_size'])} − no memory")
                out.append(_compare("memory", what, side(memory_label(km["memory_size"]), g),
                                    side("no memory", none[0]), ("pretrain", "labelled"),
                                    {**k, **km}))
    return out


def comparisons(runs: pd.DataFrame) -> list[Comparison]:
    """Every comparison the sweep's usable runs allow: fine-tuned vs supervised, head layer, distillation (vs
    teacher, vs supervised), across models, memory vs none. ``runs`` is
    ``analysis.collect.collect(...).runs`` (with ``converged``, budgets and ``pretrain_steps``)."""
    if runs.empty or "usable" not in runs:
        return []
    use = runs[runs["usable"].astype(bool)]
    return (_finetune_vs_supervised(use) + _head_layer(use) + _distill(use) + _across_models(use) + _memory(use))

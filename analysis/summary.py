"""A few plain sentences with the sweep's headline comparisons (printed by the demo and in the report).

The five comparisons SimCLRv2 draws, each one line, in this order, or a line saying why it cannot
be made from these runs:

1. the best fine-tuned top-1 at the smallest label fraction vs the supervised baseline;
2. the semi-supervised gain at each label fraction (the paper: largest with the fewest labels);
3. fine-tuning from head layer 1 vs layer 0 (section 4.2: from the middle of the head is better);
4. distillation: student vs its teacher and vs a supervised model of the student's size;
5. model size: top-1 against parameter count across the widths/depths of the sweep.

A sixth line counts the runs left out of the numbers, only when there are some.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.groups import BACKBONE, HEAD, group_runs
from analysis.labels import fraction_label, gain_label, head_label, mean_std_label, model_label, params_label
from analysis.tables import distill_table, gain_table

__all__ = ["summarize"]


def _model(row: pd.Series) -> str:
    return model_label(row["depth"], row["width"], row["sk_ratio"])


def _stat(row: pd.Series) -> str:
    """``62.75 ± 0.35 (n=2)``."""
    text = mean_std_label(row["mean"], row["std"], row["n"])
    return text.rsplit(" (", 1)[0] + f" (n={int(row['n'])})" if text != "—" else text


def _best_finetune(groups: pd.DataFrame) -> str:
    ft = groups[(groups["stage"] == "finetune") & groups["mean"].notna() & groups["label_fraction"].notna()]
    if ft.empty:
        return "Best fine-tune top-1: n/a (no finished fine-tuned runs with a label fraction)"
    f = ft["label_fraction"].min()
    at = ft[np.isclose(ft["label_fraction"], f)]
    best = at.loc[at["mean"].idxmax()]
    stat, n = _stat(best).rsplit(" (", 1)
    line = (f"Best {fraction_label(f)} fine-tune top-1: {stat} "
            f"({_model(best)}, {head_label(best['num_proj_layers'], best['ft_proj_selector'])}; {n}")
    sup = groups[(groups["stage"] == "supervised") & groups["label_fraction"].notna()]
    sup = sup[np.isclose(sup["label_fraction"], f)]
    for k in BACKBONE:
        sup = sup[(sup[k] == best[k]) | (sup[k].isna() & pd.isna(best[k]))]
    if sup.empty or sup["mean"].isna().all():
        return line + " vs supervised: n/a (no supervised run of that model and fraction)"
    s = sup.iloc[0]
    return line + f" vs supervised {_stat(s)}: {gain_label(best['mean'] - s['mean'])} points"


def _gain_by_fraction(groups: pd.DataFrame) -> str:
    numeric = gain_table(groups).numeric
    if numeric.empty or numeric["gain"].isna().all():
        return "Semi-supervised gain: n/a (needs fine-tuned and supervised runs of the same model and fraction)"
    per = numeric.dropna(subset=["gain"]).groupby("label_fraction")["gain"].agg(["mean", "size"])
    parts = ", ".join(f"{gain_label(r['mean'])} at {fraction_label(f)}" for f, r in per.iterrows())
    line = f"Semi-supervised gain over supervised: {parts} (mean over {int(per['size'].sum())} matched groups)"
    if len(per) >= 2:
        lo, hi = per.index[0], per.index[1]
        larger = per.loc[lo, "mean"] > per.loc[hi, "mean"]
        line += (f"; larger at {fraction_label(lo)} than at {fraction_label(hi)}, as SimCLRv2 reports" if larger else
                 f"; NOT larger at {fraction_label(lo)} than at {fraction_label(hi)} (SimCLRv2 expects it to be)")
    return line


def _head_layer(groups: pd.DataFrame) -> str:
    ft = groups[(groups["stage"] == "finetune") & groups["mean"].notna()]
    keys = list(BACKBONE) + list(HEAD) + ["label_fraction"]
    one = ft[ft["ft_proj_selector"] == 1][keys + ["mean"]]
    zero = ft[ft["ft_proj_selector"] == 0][keys + ["mean"]]
    pairs = one.merge(zero, on=keys, suffixes=("_1", "_0"))
    if pairs.empty:
        return "Fine-tune from head layer 1 vs 0: n/a (no fine-tuned pairs differing only in ft_proj_selector)"
    pairs["diff"] = pairs["mean_1"] - pairs["mean_0"]
    per = pairs.groupby("label_fraction")["diff"].mean()
    detail = ", ".join(f"{fraction_label(f)}: {gain_label(d)}" for f, d in per.items())
    return (f"Fine-tune from head layer 1 vs 0: {gain_label(pairs['diff'].mean())} points top-1 "
            f"(mean over {len(pairs)} matched groups; {detail})")


def _distillation(groups: pd.DataFrame) -> str:
    numeric = distill_table(groups).numeric
    if numeric.empty or numeric["student mean"].isna().all():
        return "Distillation: n/a (no finished distillation runs)"
    if len(numeric) == 1:
        r = numeric.iloc[0]
        sup = ("n/a" if pd.isna(r["supervised mean"]) else
               f"{r['supervised mean']:.2f} ({gain_label(r['gain vs supervised'])})")
        teacher = "n/a" if pd.isna(r["teacher_mean"]) else f"{r['teacher_mean']:.2f} ({gain_label(r['gain vs teacher'])})"
        return (f"Distillation at {fraction_label(r['label_fraction'])}: student "
                f"{model_label(r['depth'], r['width'], r['sk_ratio'])} {r['student mean']:.2f} vs teacher "
                f"{model_label(r['teacher_depth'], r['teacher_width'], r['teacher_sk_ratio'])} {teacher} "
                f"and vs supervised {sup}")
    return (f"Distillation ({len(numeric)} groups): student − teacher {gain_label(numeric['gain vs teacher'].mean())}, "
            f"student − supervised {gain_label(numeric['gain vs supervised'].mean())} points on average")


def _model_size(groups: pd.DataFrame) -> str:
    for stage, what in (("finetune", "fine-tune"), ("supervised", "supervised"), ("linear_eval", "linear eval")):
        frame = groups[(groups["stage"] == stage) & groups["mean"].notna() & groups["label_fraction"].notna()]
        if frame.empty:
            continue
        f = frame["label_fraction"].min()
        at = frame[np.isclose(frame["label_fraction"], f)].sort_values("mean", ascending=False)
        best = at.drop_duplicates(list(BACKBONE)).sort_values(["params", "depth", "width"])
        parts = [f"{_model(r)} ({params_label(r['params'])}) {r['mean']:.2f}" for _, r in best.head(6).iterrows()]
        more = f", and {len(best) - 6} more" if len(best) > 6 else ""
        return f"Model size at {fraction_label(f)} {what} top-1: " + ", ".join(parts) + more
    return "Model size: n/a (no finished classifier runs)"


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


def summarize(df: pd.DataFrame) -> list[str]:
    """Five one-line headline comparisons (see the module docstring) from a runs table made by
    ``analysis.collect.collect(...).runs``; a sixth line when some runs are not in the numbers."""
    if df.empty:
        return ["No runs found."]
    groups = group_runs(df)
    lines = [_best_finetune(groups), _gain_by_fraction(groups), _head_layer(groups), _distillation(groups),
             _model_size(groups)]
    left = _left_out(df)
    return lines + ([left] if left else [])

"""The SimCLRv2 paper's ablations as tables, from the group table of ``analysis.groups``.

- ``ablation_table``: top-1 by label fraction for each depth × width × SK (the paper's Table 1:
  fine-tuned on 1%/10%/100% of the labels, linear eval, supervised), one row per model and head
  configuration, with its parameter count.
- ``gain_table``: the semi-supervised gain, fine-tuned minus supervised on the same backbone and
  label fraction (paper section 3 / Figure 1: the gain is largest with the fewest labels).
- ``head_table``: projection-head depth × the head layer fine-tuning starts from (paper section 4.2,
  Figure 5; ``ft_proj_selector`` in the official code's ``ProjectionHead``).
- ``fraction_table``: every classifier group's top-1 across label fractions (the label-fraction curves).
- ``distill_table``: student vs its teacher and vs a supervised model of the student's size (Table 3).
- ``memory_table``: SimCLRv2's memory (section 2): fine-tuned and linear-eval top-1 of each memory size against
  the same recipe without memory, paired by seed, with the flags.
- ``comparison_table``: every comparison of ``analysis.compare`` with both sides' budgets, the paired
  interval, its flags (marker column ``⚑``) and the paper's figure for the same comparison.
- ``pretrain_table``: contrastive accuracy, online linear probe and kNN accuracy of pretraining, beside the
  same kNN on raw pixels (``analysis.baselines``).
- ``status_table`` / ``problems_table``: how many runs of each stage are done, running or failed,
  their cost, and every run left out of the numbers with the reason.

Each builder returns a :class:`analysis.table_render.Table` (``numeric`` for CSV and tests,
``display`` for Markdown/LaTeX/HTML); an empty table when the sweep has no runs for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.baselines import PixelKnn
from analysis.compare import FLAG_MARK, Comparison
from analysis.groups import BACKBONE, HEAD, MEMORY, STAGE_KEYS, distinct_labels, group_runs
from analysis.labels import (fraction_label, ft_label, gain_label, head_label, is_missing, mean_std_label,
                             memory_label, model_label, num_label, params_label)
from analysis.paper import PAPER_COLUMN, paper_direction, paper_row
from simclr.runfolder.layout import STAGES
from analysis.table_render import Table

__all__ = [
    "ablation_table",
    "gain_table",
    "head_table",
    "fraction_table",
    "distill_table",
    "comparison_table",
    "memory_table",
    "pretrain_table",
    "status_table",
    "problems_table",
    "all_tables",
    "STAGE_TITLES",
]

STAGE_TITLES = {"finetune": "Fine-tuned", "linear_eval": "Linear eval", "supervised": "Supervised",
                "distill": "Distilled", "pretrain": "Pretrained"}
_STATS = ("mean", "std", "n")


def _empty(name: str, title: str, why: str) -> Table:
    return Table(name=name, title=title, caption=why, display=pd.DataFrame(), numeric=pd.DataFrame())


def _stage(groups: pd.DataFrame, stage: str) -> pd.DataFrame:
    return groups[groups["stage"] == stage] if not groups.empty else groups


def _fractions(frame: pd.DataFrame) -> list[float]:
    """Sorted label fractions of a group frame; NaN (not set) last."""
    vals = pd.to_numeric(frame["label_fraction"], errors="coerce")
    out = sorted(vals.dropna().unique().tolist())
    return out + ([np.nan] if vals.isna().any() else [])


def _at_fraction(frame: pd.DataFrame, f: float) -> pd.DataFrame:
    lf = pd.to_numeric(frame["label_fraction"], errors="coerce")
    return frame[lf.isna()] if is_missing(f) else frame[np.isclose(lf, f)]


def _stats_renamed(frame: pd.DataFrame, keys: Sequence[str], prefix: str) -> pd.DataFrame:
    sub = frame[list(keys) + list(_STATS)]
    return sub.rename(columns={s: f"{prefix} {s}" for s in _STATS})


def _display_stats(numeric: pd.DataFrame, prefix: str) -> list[str]:
    return [mean_std_label(m, s, n) for m, s, n in
            zip(numeric[f"{prefix} mean"], numeric[f"{prefix} std"], numeric[f"{prefix} n"])]


def _varies(frame: pd.DataFrame, col: str) -> bool:
    return bool(frame[col].nunique(dropna=False) > 1)


def _by_keys(comps: Sequence[Comparison] | None, kind: str,
             keys: Sequence[str]) -> dict[tuple[float | None, ...], Comparison]:
    """The comparisons of ``kind`` by their values of ``keys`` (floats; NaN as None, so that it matches)."""
    out = {}
    for c in comps or ():
        if c.kind == kind:
            out[tuple(_key_value(c.keys.get(k)) for k in keys)] = c
    return out


def _key_value(v: object) -> float | None:
    # not -1: ft_proj_selector -1 is a value (all head layers)
    return None if is_missing(v) else float(v)  # type: ignore[arg-type]


def _lookup(index: dict[tuple[float | None, ...], Comparison], frame: pd.DataFrame,
            keys: Sequence[str]) -> list[Comparison | None]:
    return [index.get(tuple(_key_value(r[k]) for k in keys)) for _, r in frame.iterrows()]


def _flag_columns(numeric: pd.DataFrame, display: pd.DataFrame, found: list[Comparison | None]) -> None:
    """The marker column (first) and the flags, in place; ``numeric`` gets ``flagged`` and ``flags``."""
    numeric["flagged"] = [c is None or bool(c.flags) for c in found]
    numeric["flags"] = ["no comparison" if c is None else "; ".join(c.flags) for c in found]
    display.insert(0, FLAG_MARK, [FLAG_MARK if f else "" for f in numeric["flagged"]])
    display["Flags"] = ["" if c is None else "; ".join(c.flags) for c in found]


def ablation_table(groups: pd.DataFrame) -> Table:
    """Top-1 (mean ± std over seeds, n) per model × label fraction, like SimCLRv2 Table 1.

    Rows: one per fine-tuned (backbone, head, pretraining memory, fine-tune layer) configuration (or per
    linear-eval / supervised backbone when nothing was fine-tuned); a Memory column where memory sizes differ. Columns per (stage, label fraction):
    fine-tuned, linear eval (same backbone and head), supervised (same backbone).
    """
    name, title = "table1_ablation", "Top-1 by model and label fraction (SimCLRv2 Table 1)"
    ft, le, sup = (_stage(groups, s) for s in ("finetune", "linear_eval", "supervised"))
    if not ft.empty:
        row_keys: tuple[str, ...] = BACKBONE + HEAD + MEMORY + ("ft_proj_selector",)
        source = ft
    elif not le.empty:
        row_keys, source = BACKBONE + HEAD + MEMORY, le
    elif not sup.empty:
        row_keys, source = BACKBONE, sup
    else:
        return _empty(name, title, "No fine-tuned, linear-eval or supervised runs finished.")
    numeric = (source.groupby(list(row_keys), dropna=False, sort=True)["params"].mean().reset_index())
    blocks: list[tuple[str, str]] = []  # (numeric prefix, display header)
    for stage, keys, frame in (("finetune", BACKBONE + HEAD + MEMORY + ("ft_proj_selector",), ft),
                               ("linear_eval", BACKBONE + HEAD + MEMORY, le), ("supervised", BACKBONE, sup)):
        if frame.empty or not set(keys) <= set(row_keys):
            continue
        if stage == "linear_eval":  # one linear eval per backbone+head: the best head layer it read from
            frame = frame.sort_values("mean", ascending=False, na_position="last").drop_duplicates(
                list(keys) + ["label_fraction"])
        for f in _fractions(frame):
            prefix = f"{stage} {fraction_label(f)}"
            numeric = numeric.merge(_stats_renamed(_at_fraction(frame, f), keys, prefix), on=list(keys), how="left")
            blocks.append((prefix, f"{STAGE_TITLES[stage]} {fraction_label(f)}"))
    display = pd.DataFrame({
        "Depth": [num_label(x) for x in numeric["depth"]],
        "Width": [num_label(x) + "×" for x in numeric["width"]],
        "SK": ["yes" if not is_missing(x) and x > 0 else "no" for x in numeric["sk_ratio"]],
    })
    if _varies(numeric, "cifar_stem"):
        display["CIFAR stem"] = [num_label(bool(x) if not is_missing(x) else None) for x in numeric["cifar_stem"]]
    if "num_proj_layers" in row_keys:
        display["Head layers"] = [num_label(x) for x in numeric["num_proj_layers"]]
        if _varies(numeric, "proj_out_dim"):
            display["Head dim"] = [num_label(x) for x in numeric["proj_out_dim"]]
    if "memory_size" in row_keys and _varies(numeric, "memory_size"):
        display["Memory"] = [memory_label(x) for x in numeric["memory_size"]]
    if "ft_proj_selector" in row_keys:
        display["FT from layer"] = [ft_label(x) for x in numeric["ft_proj_selector"]]
    display["Params"] = [params_label(x) for x in numeric["params"]]
    for prefix, header in blocks:
        display[header] = _display_stats(numeric, prefix)
    display[PAPER_COLUMN] = [paper_row(d, w, s) for d, w, s in
                             zip(numeric["depth"], numeric["width"], numeric["sk_ratio"])]
    caption = ("Test top-1 (%), mean ± sample std over seeds, number of seeds in brackets. "
               "Linear eval is matched on backbone and head (its best head layer), supervised on backbone only. "
               f"{PAPER_COLUMN}: SimCLRv2 Table 1 for the same architecture, or its nearest reported one.")
    return Table(name=name, title=title, caption=caption, display=display, numeric=numeric)


def gain_table(groups: pd.DataFrame, comps: Sequence[Comparison] | None = None) -> Table:
    """Fine-tuned minus supervised top-1 on the same backbone and label fraction, per fine-tuned group; with
    ``comps`` also the paired difference with its interval and flags (``analysis.compare``)."""
    name, title = "semi_supervised_gain", "Semi-supervised gain over the supervised baseline"
    ft, sup = _stage(groups, "finetune"), _stage(groups, "supervised")
    if ft.empty:
        return _empty(name, title, "No fine-tuned runs finished.")
    keys = list(STAGE_KEYS["finetune"])
    numeric = ft[keys + ["params"]].copy()
    numeric = numeric.join(_stats_renamed(ft, [], "finetune"))
    match = list(BACKBONE) + ["label_fraction"]
    if sup.empty:
        for s in _STATS:
            numeric[f"supervised {s}"] = np.nan
    else:
        numeric = numeric.merge(_stats_renamed(sup, match, "supervised"), on=match, how="left")
    numeric["gain"] = numeric["finetune mean"] - numeric["supervised mean"]
    display = pd.DataFrame({
        "Model": [model_label(d, w, s) for d, w, s in zip(numeric["depth"], numeric["width"], numeric["sk_ratio"])],
        "Head": [head_label(h, f) for h, f in zip(numeric["num_proj_layers"], numeric["ft_proj_selector"])],
        "Labels": [fraction_label(f) for f in numeric["label_fraction"]],
        "Params": [params_label(p) for p in numeric["params"]],
    })
    if _varies(numeric, "memory_size"):
        display.insert(2, "Memory", [memory_label(x) for x in numeric["memory_size"]])
    display = display.assign(**{
        "Fine-tuned": _display_stats(numeric, "finetune"),
        "Supervised": _display_stats(numeric, "supervised"),
        "Gain": [gain_label(g) for g in numeric["gain"]],
    })
    found = _lookup(_by_keys(comps, "finetune_vs_supervised", keys), numeric, keys)
    display["Paired gain [95% CI]"] = ["—" if c is None else c.diff.label() for c in found]
    display["Budgets"] = numeric["budgets"] = ["" if c is None else c.terms() for c in found]
    _flag_columns(numeric, display, found)
    per_fraction = numeric.dropna(subset=["gain"]).groupby("label_fraction")["gain"].mean()
    mean_gains = ", ".join(f"{fraction_label(f)}: {gain_label(g)}" for f, g in per_fraction.items())
    caption = ("Gain = fine-tuned minus supervised test top-1 (percentage points), supervised matched on "
               "backbone and label fraction; '—' where no supervised run matches. "
               + (f"Mean gain by label fraction: {mean_gains}." if mean_gains else ""))
    return Table(name=name, title=title, caption=caption, display=display, numeric=numeric)


def head_table(groups: pd.DataFrame) -> Table:
    """Top-1 per projection-head depth (rows) × head layer fine-tuning starts from (columns)."""
    name, title = "head_ablation", "Projection head depth × fine-tune layer"
    ft = _stage(groups, "finetune")
    if ft.empty:
        return _empty(name, title, "No fine-tuned runs finished.")
    row_keys = list(BACKBONE) + ["label_fraction"] + list(HEAD) + list(MEMORY)
    numeric = ft[row_keys].drop_duplicates().sort_values(row_keys, na_position="last").reset_index(drop=True)
    selectors = sorted(pd.to_numeric(ft["ft_proj_selector"], errors="coerce").dropna().unique().tolist())
    if ft["ft_proj_selector"].isna().any():
        selectors.append(np.nan)
    for k in selectors:
        sub = ft[ft["ft_proj_selector"].isna()] if is_missing(k) else ft[ft["ft_proj_selector"] == k]
        numeric = numeric.merge(_stats_renamed(sub, row_keys, f"ft {ft_label(k)}"), on=row_keys, how="left")
    display = pd.DataFrame({
        "Model": [model_label(d, w, s) for d, w, s in zip(numeric["depth"], numeric["width"], numeric["sk_ratio"])],
        "Labels": [fraction_label(f) for f in numeric["label_fraction"]],
        "Head layers": [num_label(x) for x in numeric["num_proj_layers"]],
    })
    if _varies(numeric, "memory_size"):
        display["Memory"] = [memory_label(x) for x in numeric["memory_size"]]
    for k in selectors:
        display[f"FT from layer {ft_label(k)}"] = _display_stats(numeric, f"ft {ft_label(k)}")
    caption = ("Fine-tuned test top-1 (%), mean ± std (seeds). Layer 0 fine-tunes from the encoder output "
               "(the projection head is dropped); layer k keeps the first k head layers; 'all' keeps the whole head.")
    return Table(name=name, title=title, caption=caption, display=display, numeric=numeric)


def fraction_table(groups: pd.DataFrame) -> Table:
    """Every classifier group (without its label fraction) × label fraction: the label-fraction curves."""
    name, title = "label_fraction_curves", "Top-1 against label fraction"
    stages = ("finetune", "linear_eval", "supervised", "distill")
    frame = groups[groups["stage"].isin(stages)] if not groups.empty else groups
    if frame.empty:
        return _empty(name, title, "No classifier runs finished.")
    fractions = _fractions(frame)
    rows: list[dict[str, object]] = []
    firsts: list[dict[str, object]] = []
    for stage in stages:
        sub = frame[frame["stage"] == stage]
        if sub.empty:
            continue
        keys = [k for k in STAGE_KEYS[stage] if k != "label_fraction"]
        for key, g in sub.groupby(keys, dropna=False, sort=True):
            first = g.iloc[0].to_dict()
            first["label_fraction"] = None
            firsts.append(first)
            row: dict[str, object] = {"stage": stage, "group": "", "params": float(g["params"].mean())}
            for f in fractions:
                at = _at_fraction(g, f)
                prefix = fraction_label(f)
                row.update({f"{prefix} {s}": (at[s].iloc[0] if len(at) else np.nan) for s in _STATS})
            rows.append(row)
    for row, label in zip(rows, distinct_labels(firsts)):
        row["group"] = label
    numeric = pd.DataFrame(rows)
    display = pd.DataFrame({"Run group": numeric["group"], "Params": [params_label(p) for p in numeric["params"]]})
    for f in fractions:
        display[fraction_label(f)] = _display_stats(numeric, fraction_label(f))
    caption = "Test top-1 (%), mean ± std (seeds), by the fraction of labels used."
    return Table(name=name, title=title, caption=caption, display=display, numeric=numeric)


def distill_table(groups: pd.DataFrame, comps: Sequence[Comparison] | None = None) -> Table:
    """Distilled student vs its teacher(s) and vs a supervised model of the student's backbone; with ``comps``
    the paired student − teacher difference and its flags."""
    name, title = "distillation", "Distillation: student vs teacher and vs supervised"
    d, sup = _stage(groups, "distill"), _stage(groups, "supervised")
    if d.empty:
        return _empty(name, title, "No distillation runs finished.")
    keys = list(STAGE_KEYS["distill"])
    numeric = d[keys + ["params", "teacher_mean", "teacher_std", "teacher_n"]].copy()
    numeric = numeric.join(_stats_renamed(d, [], "student"))
    match = list(BACKBONE) + ["label_fraction"]
    if sup.empty:
        for s in _STATS:
            numeric[f"supervised {s}"] = np.nan
    else:
        numeric = numeric.merge(_stats_renamed(sup, match, "supervised"), on=match, how="left")
    numeric["gain vs teacher"] = numeric["student mean"] - numeric["teacher_mean"]
    numeric["gain vs supervised"] = numeric["student mean"] - numeric["supervised mean"]
    display = pd.DataFrame({
        "Student": [model_label(a, b, c) for a, b, c in zip(numeric["depth"], numeric["width"], numeric["sk_ratio"])],
        # The teacher's own label fraction too: students of a 1% and a 10% teacher are two rows.
        "Teacher": [model_label(a, b, c) + (f", ft {ft_label(f)}" if not is_missing(f) else "")
                    + (f", {fraction_label(t)} labels" if not is_missing(t) else "") for a, b, c, f, t in
                    zip(numeric["teacher_depth"], numeric["teacher_width"], numeric["teacher_sk_ratio"],
                        numeric["teacher_ft_proj_selector"], numeric["teacher_label_fraction"])],
        "Labels": [fraction_label(f) for f in numeric["label_fraction"]],
        "Student params": [params_label(p) for p in numeric["params"]],
        "Student top-1": _display_stats(numeric, "student"),
        "Teacher top-1": [mean_std_label(m, s, n) for m, s, n in
                          zip(numeric["teacher_mean"], numeric["teacher_std"], numeric["teacher_n"])],
        "Supervised top-1": _display_stats(numeric, "supervised"),
        "vs teacher": [gain_label(g) for g in numeric["gain vs teacher"]],
        "vs supervised": [gain_label(g) for g in numeric["gain vs supervised"]],
    })
    found = _lookup(_by_keys(comps, "distill_vs_teacher", keys), numeric, keys)
    display["vs teacher, paired [95% CI]"] = ["—" if c is None else c.diff.label() for c in found]
    numeric["budgets"] = ["" if c is None else c.terms() for c in found]
    _flag_columns(numeric, display, found)
    caption = ("Test top-1 (%), mean ± std; teacher = the distinct teacher runs the students learned from; "
               "supervised = same backbone as the student, same label fraction.")
    return Table(name=name, title=title, caption=caption, display=display, numeric=numeric)


def memory_table(comps: Sequence[Comparison]) -> Table:
    """One row per memory comparison (``analysis.compare`` kind ``memory``): the recipe, the memory size, both
    sides' top-1 and the paired difference with its interval and flags."""
    name, title = "memory_ablation", "SimCLRv2's memory: queue size against none"
    mine = [c for c in comps if c.kind == "memory"]
    if not mine:
        return _empty(name, title, "No fine-tuned or linear-eval runs of a pretraining with memory beside one without.")
    numeric = pd.DataFrame([{**{k: c.keys.get(k) for k in ("depth", "width", "sk_ratio", "num_proj_layers",
                                                           "ft_proj_selector", "label_fraction", "memory_size")},
                             "comparison": c.what, "memory_mean": c.diff.a_mean, "none_mean": c.diff.b_mean,
                             "diff": c.diff.mean, "lo": c.diff.lo, "hi": c.diff.hi, "n": c.diff.n,
                             "budgets": c.terms()} for c in mine])
    display = pd.DataFrame({
        "Comparison": [c.what for c in mine],
        "Memory": [memory_label(c.keys.get("memory_size")) for c in mine],
        "With memory": [num_label(c.diff.a_mean, 2) for c in mine],
        "Without": [num_label(c.diff.b_mean, 2) for c in mine],
        "Paired difference [95% CI]": [c.diff.label() for c in mine],
        "Budgets": [c.terms() for c in mine],
    })
    found: list[Comparison | None] = list(mine)
    _flag_columns(numeric, display, found)
    display[PAPER_COLUMN] = [paper_direction(c.kind, c.keys) for c in mine]
    caption = ("Test top-1 (%) of the runs whose pretraining had the memory minus the same recipe without it, paired "
               "by seed (95% t-interval); equal pretraining steps and labelled budgets, else flagged.")
    return Table(name=name, title=title, caption=caption, display=display, numeric=numeric)


def comparison_table(comps: Sequence[Comparison]) -> Table:
    """Every comparison with its terms: the paired difference (95% t-interval, seeds), each side's mean and budget
    (steps, epochs, labelled images, pretraining steps), the flags, and the paper's figure for it."""
    name, title = "comparisons", "Comparisons and their terms"
    if not comps:
        return _empty(name, title, "No two groups of finished runs to compare.")
    numeric = pd.DataFrame([{
        "kind": c.kind, "comparison": c.what, "diff": c.diff.mean, "lo": c.diff.lo, "hi": c.diff.hi, "n": c.diff.n,
        "a": c.a.label, "a_mean": c.diff.a_mean, "a_steps": c.a.steps, "a_epochs": c.a.epochs,
        "a_labelled": c.a.labelled, "a_pretrain_steps": c.a.pretrain_steps, "a_converged": c.a.converged,
        "b": c.b.label, "b_mean": c.diff.b_mean, "b_steps": c.b.steps, "b_epochs": c.b.epochs,
        "b_labelled": c.b.labelled, "b_pretrain_steps": c.b.pretrain_steps, "b_converged": c.b.converged,
        "holds": c.holds, "flags": "; ".join(c.flags)} for c in comps])
    display = pd.DataFrame({
        FLAG_MARK: [c.marker for c in comps],
        "Comparison": [c.what for c in comps],
        "Difference [95% CI]": [c.diff.label() for c in comps],
        "Side A": [f"{c.a.label} {c.diff.a_mean:.2f}" for c in comps],
        "A budget": [c.a.budget() for c in comps],
        "Side B": [f"{c.b.label} {c.diff.b_mean:.2f}" for c in comps],
        "B budget": [c.b.budget() for c in comps],
        "Flags": ["; ".join(c.flags) for c in comps],
        PAPER_COLUMN: [paper_direction(c.kind, c.keys) for c in comps],
    })
    caption = (f"Test top-1 difference A − B (points), paired by seed, 95% t-interval. {FLAG_MARK}: not a result — a "
               "side not converged (docs/CONTRACTS.md \"Convergence\"), budgets that differ where they should not, "
               "or one seed. The paper's column gives its direction for the same comparison on ImageNet.")
    return Table(name=name, title=title, caption=caption, display=display, numeric=numeric)


def pretrain_table(runs: pd.DataFrame, pixel: Mapping[str, PixelKnn] | None = None) -> Table:
    """Pretraining monitors per model: contrastive accuracy, online probe top-1, kNN top-1, and the same kNN on
    raw pixels (``pixel``: by pretraining run path, ``analysis.baselines.pixel_knn_for_runs``)."""
    name, title = "pretraining", "Pretraining monitors"
    metrics = ("contrastive_acc", "probe_top1", "knn_top1")
    groups = group_runs(runs, values=metrics)
    pre = _stage(groups, "pretrain")
    if pre.empty:
        return _empty(name, title, "No pretraining runs finished.")
    keys = list(STAGE_KEYS["pretrain"])
    numeric = pre[keys + ["params", "gpu_hours"] + [f"{m}_{s}" for m in metrics for s in _STATS]].reset_index(drop=True)
    display = pd.DataFrame({
        "Model": [model_label(a, b, c) for a, b, c in zip(numeric["depth"], numeric["width"], numeric["sk_ratio"])],
        "Head layers": [num_label(x) for x in numeric["num_proj_layers"]],
        "Params": [params_label(p) for p in numeric["params"]],
    })
    if _varies(numeric, "memory_size"):
        display.insert(2, "Memory", [memory_label(x) for x in numeric["memory_size"]])
    for m, header in zip(metrics, ("Contrastive acc", "Probe top-1", "kNN top-1")):
        display[header] = [mean_std_label(a, b, c) for a, b, c in
                           zip(numeric[f"{m}_mean"], numeric[f"{m}_std"], numeric[f"{m}_n"])]
    pix = []
    for paths in pre["paths"].reset_index(drop=True):
        vals = [t for p in str(paths).split(";") if pixel and p in pixel and (t := pixel[p].top1) is not None]
        pix.append(float(np.mean(vals)) if vals else np.nan)
    numeric["pixel_knn_top1"] = pix
    why = next((p.why_missing for p in (pixel or {}).values() if p.why_missing), "not computed")
    display["kNN on raw pixels"] = [num_label(x, 2) if not is_missing(x) else f"— ({why})" for x in pix]
    display["kNN − pixels"] = [gain_label(k - x) for k, x in zip(numeric["knn_top1_mean"], pix)]
    display["GPU-hours"] = [num_label(x, 2) for x in numeric["gpu_hours"]]
    caption = ("Final value (status.json) where recorded, else the last logged value; mean ± std (seeds). "
               "kNN on raw pixels: the same kNN, memory bank and test set with the flattened image as the "
               "feature; features below it have learnt nothing a kNN can use. GPU-hours summed over seeds.")
    return Table(name=name, title=title, caption=caption, display=display, numeric=numeric)


def status_table(runs: pd.DataFrame) -> Table:
    """Runs per stage and state, how many enter the numbers, and the compute spent."""
    name, title = "run_status", "Runs by stage and state"
    if runs.empty:
        return _empty(name, title, "No run folders found.")
    stage = runs["stage"].fillna("(unknown)")
    order = [s for s in STAGES if (stage == s).any()] + sorted(set(stage) - set(STAGES))
    rows = []
    for s in order:
        sub = runs[stage == s]
        rows.append({"stage": s, "runs": len(sub), "done": int((sub["state"] == "done").sum()),
                     "running": int((sub["state"] == "running").sum()),
                     "failed": int((sub["state"] == "failed").sum()), "in numbers": int(sub["usable"].sum()),
                     "device_hours": float(pd.to_numeric(sub["device_hours"], errors="coerce").sum()),
                     "gpu_hours": float(pd.to_numeric(sub["gpu_hours"], errors="coerce").sum())})
    numeric = pd.DataFrame(rows)
    display = numeric.copy()
    display["device_hours"] = [num_label(x, 2) for x in numeric["device_hours"]]
    display["gpu_hours"] = [num_label(x, 2) for x in numeric["gpu_hours"]]
    display = display.rename(columns={"stage": "Stage", "runs": "Runs", "done": "Done", "running": "Running",
                                      "failed": "Failed", "in numbers": "In the numbers",
                                      "device_hours": "Device-hours", "gpu_hours": "GPU-hours"}).astype(str)
    caption = ("'Running' = no status.json yet (running, queued, or killed). Only finished runs with a config "
               "enter the tables and plots.")
    return Table(name=name, title=title, caption=caption, display=display, numeric=numeric)


def problems_table(runs: pd.DataFrame, max_rows: int = 200) -> Table:
    """Every run left out of the numbers, with its state and why (at most ``max_rows`` displayed)."""
    name, title = "runs_not_in_numbers", "Runs not in the numbers"
    if runs.empty:
        return _empty(name, title, "")
    out = runs[~runs["usable"].astype(bool)]
    if out.empty:
        return _empty(name, title, "Every run finished and is in the numbers.")
    why = []
    for r in out.itertuples(index=False):
        if not r.has_config:
            why.append("no usable config" + (f"; {r.reason}" if not is_missing(r.reason) else ""))
        elif is_missing(r.stage):
            why.append("unknown stage")
        elif not is_missing(r.duplicate_of):
            why.append(f"duplicate of {r.duplicate_of}")
        else:
            why.append(str(r.reason) if not is_missing(r.reason) else "")
    numeric = pd.DataFrame({"run": out["run"].values, "stage": out["stage"].values, "state": out["state"].values,
                            "why": why, "step": out["step"].values, "total_steps": out["total_steps"].values,
                            "progress": out["progress"].values, "path": out["path"].values})
    display = pd.DataFrame({
        "Run": numeric["run"], "Stage": [s if not is_missing(s) else "?" for s in numeric["stage"]],
        "State": numeric["state"], "Why": numeric["why"],
        "Progress": ["—" if is_missing(p) else f"{100 * float(p):.0f}%" for p in numeric["progress"]],
    }).head(max_rows)
    caption = (f"{len(numeric)} run(s)" + (f", first {max_rows} shown (all in the CSV)" if len(numeric) > max_rows
                                          else "") + ".")
    return Table(name=name, title=title, caption=caption, display=display, numeric=numeric)


def all_tables(runs: pd.DataFrame, groups: pd.DataFrame | None = None, comps: Sequence[Comparison] | None = None,
               pixel: Mapping[str, PixelKnn] | None = None) -> list[Table]:
    """Every table of the report, in report order (empty ones included; the report skips them)."""
    groups = group_runs(runs) if groups is None else groups
    return [status_table(runs), problems_table(runs), comparison_table(comps or []), ablation_table(groups),
            gain_table(groups, comps), head_table(groups), fraction_table(groups), distill_table(groups, comps),
            memory_table(comps or []), pretrain_table(runs, pixel)]

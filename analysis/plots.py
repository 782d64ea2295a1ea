"""The report's figures (matplotlib, PNG + SVG), from the group table and the training curves.

- ``top1_vs_params``: test top-1 against parameter count, a line per label fraction (fine-tuned
  solid, supervised dashed, linear eval dotted): SimCLRv2 Figure 1 / Table 1 (bigger models are
  more label-efficient).
- ``gain_vs_params``: fine-tuned minus supervised against parameter count, per label fraction.
- ``head_ablation``: top-1 against the head layer fine-tuning starts from, a line per head depth,
  a panel per label fraction (SimCLRv2 Figure 5).
- ``distillation``: supervised vs teacher vs distilled student, per distillation group (Table 3).
- ``memory_monitors``: SimCLRv2's memory, the anchors' similarity to the queue against in-batch negatives and the
  queue's fill, per pretraining group with a memory (a stale queue shows as a growing gap).
- ``training_curves``: loss, probe / kNN accuracy and the other logged series per run group (mean
  over seeds at each step), one figure per stage.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend: the
Agg canvas), so this works on a headless cluster node and in a forked worker.
"""

from __future__ import annotations

import io
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.groups import BACKBONE, HEAD, MEMORY, disambiguate
from analysis.labels import fraction_label, is_missing, model_label, num_label
from simclr.runfolder.layout import STAGES

__all__ = ["FigureFile", "save_figure", "top1_vs_params", "gain_vs_params", "head_ablation", "distillation",
           "training_curves", "all_figures", "MAX_LINES"]

MAX_LINES = 8  # lines per panel; more groups than this are summarised in the caption
_FRACTION_STYLE = {"finetune": ("-", "o"), "supervised": ("--", "s"), "linear_eval": (":", "^")}


@dataclass
class FigureFile:
    """A saved figure: ``png``/``svg`` paths, the PNG bytes (for the HTML page), title and caption."""

    name: str
    title: str
    caption: str
    png: Path
    svg: Path
    png_bytes: bytes


def save_figure(fig: Figure, out_dir: str | Path, name: str, title: str, caption: str) -> FigureFile:
    """Write ``<name>.png`` (100 dpi) and ``<name>.svg`` under ``out_dir``.

    Layout is fixed by each plot (``subplots_adjust``, legends outside the axes at set anchors)
    rather than ``bbox_inches="tight"`` / ``loc="best"``: both re-draw the figure, and drawing is
    most of a report's time. SVG text stays text (``svg.fonttype: none``): smaller, faster, searchable.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="png", dpi=100)
        png, svg = out / f"{name}.png", out / f"{name}.svg"
        png.write_bytes(buf.getvalue())
        fig.savefig(svg, format="svg")
    return FigureFile(name=name, title=title, caption=caption, png=png, svg=svg, png_bytes=buf.getvalue())


def _budgets(frame: pd.DataFrame, most: int = 4) -> str:
    """`` Budgets: <both sides' budgets>; ...`` of the drawn comparisons (``budgets`` column of the tables)."""
    if "budgets" not in frame:
        return ""
    seen = list(dict.fromkeys(b for b in frame["budgets"] if isinstance(b, str) and b))
    if not seen:
        return ""
    more = f" (and {len(seen) - most} more in the tables)" if len(seen) > most else ""
    return " Budgets: " + " | ".join(seen[:most]) + more + "."


def _best_per_backbone(frame: pd.DataFrame, by: str = "mean") -> pd.DataFrame:
    """Per (backbone, label fraction), the group with the highest ``by`` (e.g. best head config)."""
    if frame.empty:
        return frame
    keys = list(BACKBONE) + ["label_fraction"]
    ranked = frame.assign(__rank=frame[by].fillna(-np.inf)).sort_values("__rank", ascending=False)
    return ranked.drop_duplicates(keys).drop(columns="__rank")


def _fraction_colors(fractions: list[float]) -> dict[float, str]:
    cycle = [f"C{i}" for i in range(10)]
    return {f: cycle[i % 10] for i, f in enumerate(fractions)}


def _sorted_fractions(frame: pd.DataFrame) -> list[float]:
    return sorted(pd.to_numeric(frame["label_fraction"], errors="coerce").dropna().unique().tolist())


def top1_vs_params(groups: pd.DataFrame) -> tuple[Figure, str] | None:
    """Top-1 vs parameter count per label fraction; None when no classifier group has both."""
    # params <= 0: a run that did not count them; it cannot sit on a log axis
    frame = groups[groups["stage"].isin(list(_FRACTION_STYLE)) & (groups["params"] > 0) & groups["mean"].notna()]
    if frame.empty:
        return None
    fractions = _sorted_fractions(frame)
    colors = _fraction_colors(fractions)
    fig = Figure(figsize=(9, 4.8))
    fig.subplots_adjust(left=0.08, right=0.74, bottom=0.11, top=0.96)
    ax = fig.add_subplot()
    annotated = False
    for stage, (ls, marker) in _FRACTION_STYLE.items():
        best = _best_per_backbone(frame[frame["stage"] == stage])
        for f in fractions:
            sub = best[np.isclose(best["label_fraction"], f)].sort_values("params")
            if sub.empty:
                continue
            ax.errorbar(sub["params"], sub["mean"], yerr=sub["std"].fillna(0), linestyle=ls, marker=marker,
                        color=colors[f], capsize=3, label=f"{stage.replace('_', ' ')} {fraction_label(f)}")
            if not annotated:  # name the models once, along the first line drawn
                annotated = True
                for p, m, lab in zip(sub["params"], sub["mean"], (model_label(a, b, c) for a, b, c in
                                                                  zip(sub["depth"], sub["width"], sub["sk_ratio"]))):
                    ax.annotate(lab, (p, m), textcoords="offset points", xytext=(3, -10), fontsize=7, color="0.3")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    caption = ("Mean over seeds, bars = std. Solid: fine-tuned (best head configuration per model), dashed: "
               "supervised, dotted: linear eval; colour = label fraction.")
    return fig, caption


def gain_vs_params(gain_numeric: pd.DataFrame) -> tuple[Figure, str] | None:
    """Semi-supervised gain vs parameter count, from ``tables.gain_table(...).numeric``."""
    if gain_numeric.empty or "gain" not in gain_numeric:
        return None
    frame = gain_numeric.dropna(subset=["gain", "params"])
    frame = frame[frame["params"] > 0]
    if frame.empty:
        return None
    best = _best_per_backbone(frame, by="gain")
    fractions = _sorted_fractions(best)
    colors = _fraction_colors(fractions)
    fig = Figure(figsize=(8, 4.5))
    fig.subplots_adjust(left=0.09, right=0.8, bottom=0.12, top=0.96)
    ax = fig.add_subplot()
    for f in fractions:
        sub = best[np.isclose(best["label_fraction"], f)].sort_values("params")
        ax.plot(sub["params"], sub["gain"], marker="o", color=colors[f], label=f"{fraction_label(f)} labels")
        bad = sub[sub["flagged"].astype(bool)] if "flagged" in sub else sub.iloc[:0]
        # A flagged gain (a side not converged, budgets unequal, one seed) is drawn grey and hatched: not a result.
        if not bad.empty:
            ax.scatter(bad["params"], bad["gain"], s=140, marker="o", facecolors="0.85", edgecolors="0.4",
                       hatch="////", zorder=3)
    if "flagged" in best and best["flagged"].astype(bool).any():
        ax.scatter([], [], s=140, marker="o", facecolors="0.85", edgecolors="0.4", hatch="////",
                   label="⚑ flagged: not a result")
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("fine-tuned − supervised top-1 (points)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig, ("Gain of the best fine-tuned head configuration per model over the supervised model of the same "
                 "backbone. Grey hatched points are flagged (see the comparisons table): not results."
                 + _budgets(best))


def head_ablation(groups: pd.DataFrame) -> tuple[Figure, str] | None:
    """Top-1 vs fine-tune layer, a line per (backbone, head depth), a panel per label fraction."""
    ft = groups[(groups["stage"] == "finetune") & groups["ft_proj_selector"].notna() & groups["mean"].notna()]
    if ft.empty or ft["ft_proj_selector"].nunique() < 2:
        return None
    fractions = _sorted_fractions(ft)[:4]
    if not fractions:
        return None
    fig = Figure(figsize=(4.2 * len(fractions), 4.8))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.3, top=0.93, wspace=0.25)
    axes = fig.subplots(1, len(fractions), squeeze=False)[0]
    dropped = 0
    for ax, f in zip(axes, fractions):
        sub = ft[np.isclose(ft["label_fraction"], f)]
        # depth, width, sk_ratio, cifar_stem, num_proj_layers, proj_out_dim, memory_size
        keys = list(BACKBONE) + list(HEAD) + list(MEMORY)
        lines = list(sub.groupby(keys, dropna=False, sort=True))[:MAX_LINES]
        dropped += max(0, sub.groupby(keys, dropna=False).ngroups - MAX_LINES)
        # Lines whose names match differ in the stem, the output size or the pretraining's memory: they say which.
        names = disambiguate([f"{model_label(key[0], key[1], key[2])}, {num_label(key[4])}-layer head"
                              for key, _ in lines], [dict(zip(keys, key)) for key, _ in lines],
                             ("cifar_stem", "proj_out_dim", "memory_size"))
        for (key, g), label in zip(lines, names):
            # ft_proj_selector -1 = "all layers" = the head depth, so it sits at the right end.
            x = g["ft_proj_selector"].where(g["ft_proj_selector"] != -1, g["num_proj_layers"])
            order = np.argsort(x.to_numpy())
            ax.errorbar(x.to_numpy()[order], g["mean"].to_numpy()[order], yerr=g["std"].fillna(0).to_numpy()[order],
                        marker="o", capsize=3, label=label)
        ax.set_title(f"{fraction_label(f)} labels")
        ax.set_xlabel("fine-tune from head layer")
        ticks = sorted(sub["ft_proj_selector"].where(sub["ft_proj_selector"] != -1, sub["num_proj_layers"]).unique())
        ax.set_xticks(ticks)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test top-1 (%)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", fontsize=7, ncol=2,
               bbox_to_anchor=(0.5, 0.0))
    caption = "Mean ± std over seeds. Layer 0 = fine-tune from the encoder (head dropped)."
    if dropped:
        caption += f" {dropped} more line(s) not drawn (at most {MAX_LINES} per panel; all are in the tables)."
    return fig, caption


def distillation(distill_numeric: pd.DataFrame) -> tuple[Figure, str] | None:
    """Grouped bars per distillation group: supervised, teacher, student; from ``tables.distill_table``."""
    if distill_numeric.empty or distill_numeric["student mean"].isna().all():
        return None
    frame = distill_numeric.head(12)
    # The teacher's label fraction where it is not the student's (two bars of one name otherwise).
    t_frac = frame["teacher_label_fraction"] if "teacher_label_fraction" in frame else [None] * len(frame)
    labels = [f"{model_label(a, b, c)} ← {model_label(d, e, g)}\n{fraction_label(f)}"
              + ("" if is_missing(t) or (not is_missing(f) and float(t) == float(f)) else f", teacher {fraction_label(t)}")
              for a, b, c, d, e, g, f, t in
              zip(frame["depth"], frame["width"], frame["sk_ratio"], frame["teacher_depth"], frame["teacher_width"],
                  frame["teacher_sk_ratio"], frame["label_fraction"], t_frac)]
    x = np.arange(len(frame))
    fig = Figure(figsize=(max(5.5, 1.6 * len(frame) + 2), 4.8))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.16, top=0.86)
    ax = fig.add_subplot()
    for i, (col, std, name) in enumerate((("supervised mean", "supervised std", "supervised (student size)"),
                                          ("teacher_mean", "teacher_std", "teacher"),
                                          ("student mean", "student std", "distilled student"))):
        bars = ax.bar(x + (i - 1) * 0.27, frame[col].fillna(0), 0.27, yerr=frame[std].fillna(0), capsize=3,
                      label=name)
        if col == "student mean" and "flagged" in frame:
            for bar, flagged in zip(bars, frame["flagged"].astype(bool)):
                if flagged:  # student - teacher flagged (not converged, one seed): greyed and hatched
                    bar.set_facecolor("0.8")
                    bar.set_hatch("////")
                    bar.set_edgecolor("0.35")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_xlim(-0.7, len(frame) - 0.3)
    ax.set_ylabel("test top-1 (%)")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=3)
    ax.grid(True, axis="y", alpha=0.3)
    caption = ("Student ← teacher, label fraction. A missing bar (height 0) = no matching run. A grey hatched student "
               "bar: its comparison with the teacher is flagged (see the comparisons table).")
    if len(distill_numeric) > 12:
        caption += f" First 12 of {len(distill_numeric)} groups shown."
    caption += _budgets(frame)
    return fig, caption


# The memory's monitors (pretrain with pretrain.memory_size > 0) have a figure of their own, ``memory_monitors``.
MEMORY_SERIES = ("memory_fill", "batch_neg_sim", "memory_neg_sim")


def training_curves(groups: pd.DataFrame, curves: pd.DataFrame, stage: str) -> tuple[Figure, str] | None:
    """Mean curve over seeds per group of ``stage``, a panel per logged series (at most 6; ``lr``, the memory's
    monitors and the single final ``test`` point left out)."""
    sub_groups = groups[groups["stage"] == stage]
    if sub_groups.empty or curves.empty:
        return None
    path_to_label = {p: lab for lab, paths in zip(sub_groups["label"], sub_groups["paths"]) for p in paths.split(";")}
    # Work on category codes: the curves frame can hold a million points, the runs only a thousand.
    run = curves["run"].astype("category")
    all_labels = sorted(set(path_to_label.values()))
    label_code = {lab: i for i, lab in enumerate(all_labels)}
    group_of_run = np.array([label_code.get(path_to_label.get(str(p)), -1) for p in run.cat.categories] + [-1])
    group = group_of_run[run.cat.codes.to_numpy()]  # code -1 (missing run) -> the trailing -1
    # lr is a schedule, not a result; "test" holds the one final evaluation, not a curve.
    names = curves["name"].astype(str)
    keep = ((group >= 0) & (names != "lr").to_numpy() & ~names.isin(MEMORY_SERIES).to_numpy()
            & (curves["split"].astype(str) != "test").to_numpy())
    if not keep.any():
        return None
    present = np.unique(group[keep])
    shown_codes = present[:MAX_LINES]
    keep &= np.isin(group, shown_codes)
    c = pd.DataFrame({"group": group[keep], "split": curves["split"].to_numpy()[keep],
                      "name": curves["name"].to_numpy()[keep], "step": curves["step"].to_numpy()[keep],
                      "value": curves["value"].to_numpy()[keep]})
    mean = c.groupby(["group", "split", "name", "step"], sort=True)["value"].mean().reset_index()
    series = sorted({(str(a), str(b)) for a, b in mean[["split", "name"]].drop_duplicates().itertuples(index=False)},
                    key=lambda sn: (sn[1] != "loss", sn))[:6]
    shown = [all_labels[i] for i in shown_codes]
    labels = [all_labels[i] for i in present]
    mean["group"] = [all_labels[i] for i in mean["group"]]
    mean["split"] = mean["split"].astype(str)
    mean["name"] = mean["name"].astype(str)
    ncols = 2 if len(series) == 4 else min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    legend_rows = math.ceil(len(shown) / 2)
    legend_in = 0.2 * legend_rows + 0.2  # inches of legend above the panels
    height = 3.2 * nrows + legend_in
    fig = Figure(figsize=(max(4.6 * ncols, 8.0), height))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.5 / height * 1.2, top=1 - (legend_in + 0.35) / height,
                        hspace=0.45, wspace=0.25)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (split, name) in zip(axes, series):
        m = mean[(mean["split"] == split) & (mean["name"] == name)]
        for i, lab in enumerate(shown):
            g = m[m["group"] == lab]
            if len(g):
                ax.plot(g["step"], g["value"], color=f"C{i % 10}", label=lab, linewidth=1.2)
        ax.set_title(f"{split}/{name}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(series):]:
        ax.set_visible(False)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", fontsize=7,
               ncol=min(2, len(shown)), bbox_to_anchor=(0.5, 1.0), frameon=False)
    caption = f"Mean over seeds at each logged step; finished runs only. {len(shown)} of {len(labels)} group(s)."
    return fig, caption


def memory_monitors(groups: pd.DataFrame, curves: pd.DataFrame) -> tuple[Figure, str] | None:
    """Per pretraining group with a memory: the mean cosine similarity of the anchors to the queue's entries (solid)
    and to their in-batch negatives (dashed), and the queue's fill; mean over seeds. A queue whose line leaves the
    in-batch one holds projections the online network no longer resembles (a stale queue)."""
    pre = groups[(groups["stage"] == "pretrain") & (pd.to_numeric(groups["memory_size"], errors="coerce") > 0)]
    if pre.empty or curves.empty:
        return None
    label_of = {p: lab for lab, paths in zip(pre["label"], pre["paths"]) for p in str(paths).split(";")}
    c = curves[curves["name"].astype(str).isin(MEMORY_SERIES) & (curves["split"].astype(str) == "train")]
    c = c.assign(group=c["run"].astype(str).map(label_of), name=c["name"].astype(str)).dropna(subset=["group"])
    if c.empty:
        return None
    mean = c.groupby(["group", "name", "step"], sort=True)["value"].mean().reset_index()
    labels = sorted(mean["group"].unique())[:MAX_LINES]
    fig = Figure(figsize=(10, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.3, top=0.92, wspace=0.25)
    sim, fill = fig.subplots(1, 2)
    for i, lab in enumerate(labels):
        for name, ax, style in (("memory_neg_sim", sim, "-"), ("batch_neg_sim", sim, "--"), ("memory_fill", fill, "-")):
            g = mean[(mean["group"] == lab) & (mean["name"] == name)]
            if len(g):
                ax.plot(g["step"], g["value"], style, color=f"C{i % 10}", linewidth=1.2,
                        label=lab if name == "memory_neg_sim" else None)
    sim.set_title("cosine similarity: queue (solid), in-batch negatives (dashed)", fontsize=9)
    fill.set_title("queue fill", fontsize=9)
    for ax in (sim, fill):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    fig.legend(*sim.get_legend_handles_labels(), loc="lower center", fontsize=7, ncol=2, bbox_to_anchor=(0.5, 0.0))
    caption = ("Mean over seeds at each logged step. The queue's entries come from a moving average of the network; "
               "a gap that grows between the solid and the dashed line means a stale queue.")
    return fig, caption


@dataclass
class _FigureInputs:
    groups: pd.DataFrame
    curves: pd.DataFrame
    gain_numeric: pd.DataFrame
    distill_numeric: pd.DataFrame
    out_dir: Path


_SPECS: list[tuple[str, str]] = [
    ("top1_vs_params", "Top-1 against parameter count"),
    ("gain_vs_params", "Semi-supervised gain against model size"),
    ("head_ablation", "Head layers × fine-tune layer"),
    ("distillation", "Distillation"),
    *((f"curves_{stage}", f"Training curves: {stage.replace('_', ' ')}") for stage in STAGES),
    ("memory_monitors", "SimCLRv2's memory: queue against in-batch negatives"),
]
# Set in the parent just before forking the figure workers: they inherit it, so the (possibly large)
# curves frame is never pickled.
_INPUTS: _FigureInputs | None = None


def _make(name: str, inp: _FigureInputs) -> tuple[Figure, str] | None:
    if name == "top1_vs_params":
        return top1_vs_params(inp.groups)
    if name == "gain_vs_params":
        return gain_vs_params(inp.gain_numeric)
    if name == "head_ablation":
        return head_ablation(inp.groups)
    if name == "distillation":
        return distillation(inp.distill_numeric)
    if name == "memory_monitors":
        return memory_monitors(inp.groups, inp.curves)
    return training_curves(inp.groups, inp.curves, name.removeprefix("curves_"))


def _render(index: int, inp: _FigureInputs | None = None) -> FigureFile | None:
    inp = inp if inp is not None else _INPUTS
    assert inp is not None, "figure inputs not set"
    name, title = _SPECS[index]
    made = _make(name, inp)
    if made is None:
        return None
    fig, caption = made
    return save_figure(fig, inp.out_dir, name, title, caption)


def all_figures(groups: pd.DataFrame, curves: pd.DataFrame, gain_numeric: pd.DataFrame,
                distill_numeric: pd.DataFrame, out_dir: str | Path, workers: int = 1) -> list[FigureFile]:
    """Make and save every figure that the data supports; returns them in report order.

    ``workers`` > 1 draws the figures in that many forked processes (drawing is most of a report's
    time and each figure is independent); falls back to drawing here if processes cannot be made.
    """
    global _INPUTS
    inp = _FigureInputs(groups, curves, gain_numeric, distill_numeric, Path(out_dir))
    indices = list(range(len(_SPECS)))
    results: list[FigureFile | None] | None = None
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        _INPUTS = inp
        try:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=min(workers, len(indices)), mp_context=ctx) as pool:
                # the costly curve figures first, so the pool ends evenly
                order = indices[4:] + indices[:4]
                done = dict(zip(order, pool.map(_render, order)))
            results = [done[i] for i in indices]
        except (OSError, BrokenProcessPool):
            results = None
        finally:
            _INPUTS = None
    if results is None:
        results = [_render(i, inp) for i in indices]
    return [f for f in results if f is not None]

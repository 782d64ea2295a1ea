from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import collect
from analysis.groups import group_runs
from analysis.plots import all_figures, gain_vs_params, head_ablation, top1_vs_params, training_curves
from analysis.synthetic import write_run
from analysis.tables import distill_table, gain_table


def test_all_figures_png_and_svg(known_sweep: Path, tmp_path: Path) -> None:
    c = collect(known_sweep)
    g = group_runs(c.runs)
    figs = all_figures(g, c.curves, gain_table(g).numeric, distill_table(g).numeric, tmp_path / "figures")
    names = [f.name for f in figs]
    assert names == ["top1_vs_params", "gain_vs_params", "head_ablation", "distillation", "curves_pretrain",
                     "curves_finetune", "curves_distill", "curves_supervised", "curves_linear_eval"]
    for f in figs:
        assert f.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.png.read_bytes() == f.png_bytes
        assert ET.parse(f.svg).getroot().tag.endswith("svg")
        assert f.title and f.caption


def test_curves_only_from_finished_runs(known_sweep: Path) -> None:
    c = collect(known_sweep)
    g = group_runs(c.runs)
    fig, caption = training_curves(g, c.curves, "finetune")
    labels = {line.get_label() for ax in fig.axes for line in ax.get_lines()}
    assert labels == set(g.loc[g["stage"] == "finetune", "label"])  # 4 groups, the running/failed runs in none
    assert "4 of 4 group(s)" in caption


def test_no_data_no_figure(known_sweep: Path) -> None:
    runs = collect(known_sweep).runs
    assert top1_vs_params(group_runs(runs.iloc[0:0])) is None
    only_ft1 = group_runs(runs[(runs["stage"] == "finetune") & (runs["ft_proj_selector"] == 1)])
    assert head_ablation(only_ft1) is None  # one fine-tune layer: nothing to compare
    assert all_figures(group_runs(pd.DataFrame()), pd.DataFrame(columns=["run", "split", "name", "step", "value"]),
                       pd.DataFrame(), pd.DataFrame(), Path("/nonexistent-never-written")) == []


@pytest.mark.parametrize("stage", ["pretrain", "distill"])
def test_curve_panels_name_series(known_sweep: Path, stage: str) -> None:
    c = collect(known_sweep)
    fig, _ = training_curves(group_runs(c.runs), c.curves, stage)
    titles = {ax.get_title() for ax in fig.axes if ax.get_visible()}
    expected = {"pretrain": {"train/loss", "train/contrastive_acc", "train/probe_top1", "val/knn_top1"},
                "distill": {"train/distill_loss", "train/agreement"}}[stage]
    assert titles == expected  # lr is left out


@pytest.mark.slow  # draws every figure twice (~6 s on 2 shared cores)
def test_figures_drawn_in_worker_processes_match(known_sweep: Path, tmp_path: Path) -> None:
    c = collect(known_sweep)
    g = group_runs(c.runs)
    args = (g, c.curves, gain_table(g).numeric, distill_table(g).numeric)
    serial = all_figures(*args, tmp_path / "serial")
    forked = all_figures(*args, tmp_path / "forked", workers=2)
    assert [f.name for f in forked] == [f.name for f in serial]
    assert all(f.png.parent == tmp_path / "forked" and f.png_bytes[:4] == b"\x89PNG" for f in forked)
    assert [(f.title, f.caption) for f in forked] == [(f.title, f.caption) for f in serial]


def test_runs_without_parameter_counts_are_not_on_the_log_axis(tmp_path: Path) -> None:
    write_run(tmp_path, stage="finetune", ft_proj_selector=1, label_fraction=0.1, top1=50.0, params=0)
    write_run(tmp_path, stage="supervised", label_fraction=0.1, top1=40.0, params=0)
    g = group_runs(collect(tmp_path).runs)
    assert top1_vs_params(g) is None and gain_vs_params(gain_table(g).numeric) is None


def test_head_ablation_lines_that_differ_in_the_stem_or_output_size_are_named_apart(tmp_path: Path) -> None:
    from analysis.synthetic import model_config, write_run

    for stem, out in ((True, 128), (False, 128), (True, 64)):
        for sel in (0, 1):
            write_run(tmp_path, stage="finetune", model=model_config(cifar_stem=stem, proj_out_dim=out),
                      ft_proj_selector=sel, label_fraction=0.1, top1=60.0 + sel)
    fig, _ = head_ablation(group_runs(collect(tmp_path).runs))
    labels = sorted(line.get_label() for line in fig.axes[0].containers)
    assert labels == ["R18 1×, 3-layer head · CIFAR stem, out dim 128", "R18 1×, 3-layer head · CIFAR stem, out dim 64",
                      "R18 1×, 3-layer head · ImageNet stem, out dim 128"]


def _hatched(fig) -> list[str]:  # type: ignore[no-untyped-def]
    ax = fig.axes[0]
    return [a.get_hatch() for a in [*ax.collections, *ax.patches] if a.get_hatch()]


def test_flagged_comparisons_are_drawn_hatched(known_sweep: Path, tmp_path: Path) -> None:
    """Issue 16: a flagged gain or student is grey and hatched; an unflagged one is not."""
    from analysis.compare import comparisons

    runs = collect(known_sweep).runs
    g = group_runs(runs)
    comps = comparisons(runs)  # every comparison of the known sweep is flagged (too few points to judge)
    fig, caption = gain_vs_params(gain_table(g, comps).numeric)  # type: ignore[misc]
    assert _hatched(fig) and "hatched" in caption
    from analysis.plots import distillation

    fig, _ = distillation(distill_table(g, comps).numeric)  # type: ignore[misc]
    assert _hatched(fig) == ["////"]
    unflagged = gain_table(g, []).numeric.assign(flagged=False)
    fig, _ = gain_vs_params(unflagged)  # type: ignore[misc]
    assert _hatched(fig) == []


def test_plot_captions_state_both_sides_budgets(known_sweep: Path) -> None:
    from analysis.compare import comparisons

    runs = collect(known_sweep).runs
    g = group_runs(runs)
    _, caption = gain_vs_params(gain_table(g, comparisons(runs)).numeric)  # type: ignore[misc]
    assert " Budgets: fine-tuned: 100 steps, 1 epochs, 25.6k labelled images; supervised: 100 steps, 1 epochs, " \
           "25.6k labelled images, no pretraining" in caption


def test_the_memory_monitors_have_a_figure_of_their_own(tmp_path: Path) -> None:
    """The queue's similarity against the in-batch negatives, per pretraining group with a memory; the training
    curves of pretraining keep their panels (the monitors would push the probe and kNN out of the six)."""
    from analysis.plots import memory_monitors

    series = {"train/memory_fill": lambda t: min(1.0, 4 * t), "train/memory_neg_sim": lambda t: 0.1 + 0.5 * t,
              "train/batch_neg_sim": lambda t: 0.1}
    for memory in (0, 4096):
        write_run(tmp_path, stage="pretrain", final={"test/knn_top1": 50.0}, metric_lines=120,
                  extra_config={"pretrain": {"memory_size": memory}}, curves=series if memory else None)
    c = collect(tmp_path)
    g = group_runs(c.runs)
    made = memory_monitors(g, c.curves)
    assert made is not None
    fig, caption = made
    labels = {line.get_label() for ax in fig.axes for line in ax.get_lines()} - {None} - {""}
    assert {lab for lab in labels if not lab.startswith("_")} == {g.loc[g["memory_size"] == 4096, "label"].item()}
    assert "stale queue" in caption
    curves, _ = training_curves(g, c.curves, "pretrain")
    titles = {ax.get_title() for ax in curves.axes if ax.get_visible()}
    assert not titles & {"train/memory_fill", "train/memory_neg_sim", "train/batch_neg_sim"}
    assert memory_monitors(g[g["memory_size"] == 0], c.curves) is None  # no memory, no figure

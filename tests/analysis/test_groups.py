from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import collect
from analysis.groups import check_groups, group_label, group_runs, metric_series
from analysis.synthetic import model_config, write_run


@pytest.fixture(scope="module")
def groups(known_sweep: Path) -> pd.DataFrame:
    return group_runs(collect(known_sweep).runs)


def _one(groups: pd.DataFrame, **match: object) -> pd.Series:
    sel = groups
    for k, v in match.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"{match}: {len(sel)} groups"
    return sel.iloc[0]


def test_group_mean_std_n_exact(groups: pd.DataFrame) -> None:
    g = _one(groups, stage="finetune", depth=18, ft_proj_selector=1, label_fraction=0.01)
    # seeds 0,1,2 -> 60, 62, 64; the running (seed 5) and failed (seed 6) runs are not in it
    assert (g["mean"], g["std"], g["n"], g["n_runs"], g["seeds"]) == (62.0, 2.0, 3, 3, "0,1,2")
    g = _one(groups, stage="finetune", depth=18, ft_proj_selector=0, label_fraction=0.01)
    assert g["mean"] == 59.0 and g["std"] == pytest.approx(math.sqrt(2)) and g["n"] == 2
    g = _one(groups, stage="supervised", depth=50, label_fraction=0.01)
    assert g["mean"] == 45.0 and math.isnan(g["std"]) and g["n"] == 1
    assert g["params"] == 9_000_000 and g["gpu_hours"] == 1.0


def test_supervised_groups_ignore_head_axes(groups: pd.DataFrame) -> None:
    sup = groups[groups["stage"] == "supervised"]
    assert len(sup) == 4 and sup["num_proj_layers"].isna().all() and sup["ft_proj_selector"].isna().all()


def test_distill_group_teacher_stats(groups: pd.DataFrame) -> None:
    g = _one(groups, stage="distill")
    assert (g["mean"], g["teacher_mean"], g["teacher_n"]) == (67.0, 71.0, 2)
    assert (g["teacher_depth"], g["teacher_width"], g["teacher_ft_proj_selector"]) == (50, 2.0, 1)
    assert g["label"] == "distill R18 0.5× · head 3 · 1% ← teacher R50 2× SK, ft 1"


def test_pretrain_metric_from_final(known_sweep: Path) -> None:
    runs = collect(known_sweep).runs
    g = group_runs(runs, values=("knn_top1", "probe_top1"))
    pre = _one(g, stage="pretrain")
    assert (pre["knn_top1_mean"], pre["knn_top1_n"]) == (31.0, 2)
    assert pre["probe_top1_n"] == 2  # not in final: the last logged value is used
    knn = metric_series(runs[runs["stage"] == "pretrain"], "knn_top1")
    assert sorted(knn.tolist()) == [30.0, 32.0]


def test_labels() -> None:
    row = {"stage": "finetune", "depth": 50.0, "width": 2.0, "sk_ratio": 0.0625, "num_proj_layers": 3.0,
           "ft_proj_selector": -1.0, "label_fraction": 0.1}
    assert group_label(row) == "finetune R50 2× SK · head 3, ft all · 10%"
    assert group_label({**row, "stage": "supervised"}) == "supervised R50 2× SK · 10%"


def test_empty_runs() -> None:
    assert group_runs(pd.DataFrame()).empty


def test_check_groups_flags_pooled_config_points_across_sweeps(tmp_path: Path) -> None:
    for sweep, epochs in (("alpha", 10), ("beta", 20)):
        write_run(tmp_path / sweep, stage="supervised", label_fraction=0.1, top1=50.0, sweep=sweep,
                  extra_config={"train": {"epochs": epochs}})
    runs = collect(tmp_path).runs
    (w,) = check_groups(runs)
    assert "pools 2 different config points" in w and "'alpha'" in w and "'beta'" in w and "config.json" in w


def test_check_groups_accepts_per_seed_hashes_within_a_sweep(tmp_path: Path) -> None:
    # distill points whose hash includes the per-seed teacher run: one config id per seed, no warning
    for seed in (0, 1):
        t = write_run(tmp_path, stage="finetune", seed=seed, ft_proj_selector=1, label_fraction=0.1, top1=70.0)
        write_run(tmp_path, stage="distill", seed=seed, label_fraction=0.1, teacher=str(t), top1=60.0)
    runs = collect(tmp_path).runs
    assert runs.loc[runs["stage"] == "distill", "config_id"].nunique() == 2
    assert check_groups(runs) == []


def test_students_of_teachers_at_different_label_fractions_are_not_pooled(tmp_path: Path) -> None:
    """Students of a 1% and of a 10% teacher (same architectures) made one row: 70.00 +- 9.86 (6)."""
    for frac, teacher_top1, top1 in ((0.01, 61.0, 60.0), (0.1, 79.0, 80.0)):
        for seed in (0, 1, 2):
            t = write_run(tmp_path, stage="finetune", seed=seed, ft_proj_selector=1, label_fraction=frac,
                          top1=teacher_top1)
            write_run(tmp_path, stage="distill", seed=seed, label_fraction=0.01, teacher=str(t), top1=top1)
    g = group_runs(collect(tmp_path).runs)
    d = g[g["stage"] == "distill"].sort_values("teacher_label_fraction")
    assert d["mean"].tolist() == [60.0, 80.0] and d["n"].tolist() == [3, 3]


def test_groups_that_differ_only_in_a_key_the_label_leaves_out_read_apart(tmp_path: Path) -> None:
    """Two fine-tune groups, CIFAR vs ImageNet stem, were two rows named 'finetune R18 1× · head 3, ft 1 · 10%'."""
    from analysis.tables import fraction_table

    for stem, top1 in ((True, 70.0), (False, 60.0)):
        for seed in (0, 1):
            write_run(tmp_path, stage="finetune", seed=seed, model=model_config(cifar_stem=stem), ft_proj_selector=1,
                      label_fraction=0.1, top1=top1)
    write_run(tmp_path, stage="finetune", model=model_config(proj_out_dim=64, depth=50), ft_proj_selector=1,
              label_fraction=0.1, top1=50.0)
    g = group_runs(collect(tmp_path).runs).sort_values("mean")
    assert g["label"].tolist() == ["finetune R50 1× · head 3, ft 1 · 10%",
                                   "finetune R18 1× · head 3, ft 1 · 10% · ImageNet stem",
                                   "finetune R18 1× · head 3, ft 1 · 10% · CIFAR stem"]
    names = fraction_table(g).numeric["group"].tolist()
    assert len(set(names)) == 3 and "finetune R18 1× · head 3, ft 1 · CIFAR stem" in names


def test_the_distillation_table_names_the_teachers_label_fraction(tmp_path: Path) -> None:
    from analysis.tables import distill_table

    for frac, top1 in ((0.01, 60.0), (0.1, 80.0)):
        t = write_run(tmp_path, stage="finetune", ft_proj_selector=1, label_fraction=frac, top1=top1 + 1)
        write_run(tmp_path, stage="distill", label_fraction=0.01, teacher=str(t), top1=top1)
    teachers = distill_table(group_runs(collect(tmp_path).runs)).display["Teacher"].tolist()
    assert sorted(teachers) == ["R18 1×, ft 1, 1% labels", "R18 1×, ft 1, 10% labels"]

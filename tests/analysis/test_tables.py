from __future__ import annotations

import math
import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import collect
from analysis.groups import group_runs
from analysis.tables import (ablation_table, all_tables, distill_table, fraction_table, gain_table, head_table,
                             pretrain_table, problems_table, status_table)

SQRT2 = math.sqrt(2)


@pytest.fixture(scope="module")
def runs(known_sweep: Path) -> pd.DataFrame:
    return collect(known_sweep).runs


@pytest.fixture(scope="module")
def groups(runs: pd.DataFrame) -> pd.DataFrame:
    return group_runs(runs)


def test_ablation_table_like_paper_table1(groups: pd.DataFrame) -> None:
    t = ablation_table(groups)
    n = t.numeric
    # rows: A ft0, A ft1, B ft1 (sorted by depth, width, sk, head, ft)
    assert n[["depth", "ft_proj_selector"]].values.tolist() == [[18, 0], [18, 1], [50, 1]]
    assert n["finetune 1% mean"].tolist() == [59.0, 62.0, 71.0]
    assert n["finetune 1% n"].tolist() == [2, 3, 2]
    assert n["finetune 10% mean"].tolist()[:2] == [pytest.approx(math.nan, nan_ok=True), 71.0]
    assert n["linear_eval 100% mean"].tolist()[:2] == [51.0, 51.0] and math.isnan(n["linear_eval 100% mean"][2])
    assert n["supervised 1% mean"].tolist() == [41.0, 41.0, 45.0]  # matched on backbone only
    assert n["supervised 10% mean"].tolist()[:2] == [66.0, 66.0]
    assert n["params"].tolist() == [1e6, 1e6, 9e6]
    d = t.display
    assert list(d.columns) == ["Depth", "Width", "SK", "Head layers", "FT from layer", "Params", "Fine-tuned 1%",
                               "Fine-tuned 10%", "Linear eval 100%", "Supervised 1%", "Supervised 10%",
                               "SimCLRv2 paper (ImageNet top-1)"]
    assert d.iloc[1].tolist() == ["18", "1×", "no", "3", "1", "1.0M", "62.00 ± 2.00 (3)", "71.00 ± 1.41 (2)",
                                  "51.00 ± 1.41 (2)", "41.00 ± 1.41 (2)", "66.00 ± 1.41 (2)",
                                  "R50 1×, nearest reported: fine-tuned 1% 57.9, 10% 68.4, 100% 76.3; linear eval 71.7"]
    # an architecture of Table 1 gets its own row of it
    assert d.iloc[2]["SimCLRv2 paper (ImageNet top-1)"] == ("R50 2× SK: fine-tuned 1% 70.6, 10% 77.0, 100% 81.3; "
                                                          "linear eval 77.7")
    assert d.iloc[2][["Depth", "Width", "SK", "Fine-tuned 10%", "Supervised 1%"]].tolist() == [
        "50", "2×", "yes", "—", "45.00 (1)"]


def test_gain_table(groups: pd.DataFrame) -> None:
    t = gain_table(groups)
    n = t.numeric
    got = {(r.depth, r.ft_proj_selector, r.label_fraction): r.gain for r in n.itertuples()}
    assert got == {(18, 0, 0.01): 18.0, (18, 1, 0.01): 21.0, (18, 1, 0.1): 5.0, (50, 1, 0.01): 26.0}
    assert n.loc[n["depth"] == 50, "supervised n"].tolist() == [1]
    assert "1%: +21.67" in t.caption and "10%: +5.00" in t.caption
    assert t.display["Gain"].tolist() == ["+18.00", "+21.00", "+5.00", "+26.00"]


def test_gain_table_without_supervised(runs: pd.DataFrame) -> None:
    g = group_runs(runs[runs["stage"] != "supervised"])
    t = gain_table(g)
    assert t.numeric["gain"].isna().all() and set(t.display["Gain"]) == {"—"}


def test_head_table(groups: pd.DataFrame) -> None:
    t = head_table(groups)
    n = t.numeric
    a1 = n[(n["depth"] == 18) & (n["label_fraction"] == 0.01)].iloc[0]
    assert (a1["ft 0 mean"], a1["ft 1 mean"], a1["ft 1 n"]) == (59.0, 62.0, 3)
    assert list(t.display.columns) == ["Model", "Labels", "Head layers", "FT from layer 0", "FT from layer 1"]
    assert t.display.iloc[0].tolist() == ["R18 1×", "1%", "3", "59.00 ± 1.41 (2)", "62.00 ± 2.00 (3)"]


def test_distill_table(groups: pd.DataFrame) -> None:
    t = distill_table(groups)
    r = t.numeric.iloc[0]
    assert (r["student mean"], r["teacher_mean"], r["supervised mean"]) == (67.0, 71.0, 31.0)
    assert (r["gain vs teacher"], r["gain vs supervised"]) == (-4.0, 36.0)
    assert t.display.iloc[0][["Student", "Teacher", "Labels", "vs teacher", "vs supervised"]].tolist() == [
        "R18 0.5×", "R50 2× SK, ft 1, 1% labels", "1%", "-4.00", "+36.00"]


def test_fraction_table(groups: pd.DataFrame) -> None:
    t = fraction_table(groups)
    d = t.display.set_index("Run group")
    assert list(t.display.columns) == ["Run group", "Params", "1%", "10%", "100%"]
    assert d.loc["finetune R18 1× · head 3, ft 1", ["1%", "10%", "100%"]].tolist() == [
        "62.00 ± 2.00 (3)", "71.00 ± 1.41 (2)", "—"]
    assert d.loc["linear_eval R18 1× · head 3, ft 1", "100%"] == "51.00 ± 1.41 (2)"
    assert d.loc["supervised R18 1×", "10%"] == "66.00 ± 1.41 (2)"


def test_pretrain_table(runs: pd.DataFrame) -> None:
    t = pretrain_table(runs)
    assert t.numeric["knn_top1_mean"].tolist() == [31.0] and t.numeric["knn_top1_n"].tolist() == [2]
    assert t.display["kNN top-1"].tolist() == ["31.00 ± 1.41 (2)"]
    assert t.display["kNN on raw pixels"].tolist() == ["— (not computed)"]


def test_pretrain_table_beside_pixels(runs: pd.DataFrame) -> None:
    from analysis.baselines import PixelKnn

    paths = runs.loc[runs["stage"] == "pretrain", "path"]
    pixel = {p: PixelKnn(40.0, None, "/d", 32, 100, 100, 200, True) for p in paths}
    t = pretrain_table(runs, pixel)
    assert t.numeric["pixel_knn_top1"].tolist() == [40.0]
    assert t.display[["kNN on raw pixels", "kNN − pixels"]].iloc[0].tolist() == ["40.00", "-9.00"]


def test_comparison_table_and_flag_columns(runs: pd.DataFrame, groups: pd.DataFrame) -> None:
    from analysis.compare import comparisons
    from analysis.tables import comparison_table

    comps = comparisons(runs)
    t = comparison_table(comps)
    assert list(t.display.columns) == ["⚑", "Comparison", "Difference [95% CI]", "Side A", "A budget", "Side B",
                                       "B budget", "Flags", "SimCLRv2 paper (ImageNet top-1)"]
    first = t.display.iloc[0]
    assert first["⚑"] == "⚑" and first["Comparison"] == "1% labels, R18 1× head 3, ft 0: fine-tuned − supervised"
    assert first["Difference [95% CI]"] == "+18.00 [+18.00, +18.00] (n=2 seeds)"
    assert first["SimCLRv2 paper (ImageNet top-1)"].startswith("R50 1× at 1%: fine-tuned 57.9 vs supervised 25.4 "
                                                                "(+32.5)")
    assert not t.numeric["holds"].any()
    g = gain_table(groups, comps)
    assert g.display.columns[0] == "⚑" and g.numeric["flagged"].all()
    assert g.display["Paired gain [95% CI]"].iloc[0] == "+18.00 [+18.00, +18.00] (n=2 seeds)"


def test_status_and_problem_tables(runs: pd.DataFrame) -> None:
    s = status_table(runs).numeric.set_index("stage")
    assert s.loc["finetune", ["runs", "done", "running", "failed", "in numbers"]].tolist() == [11, 9, 1, 1, 9]
    assert s["runs"].sum() == 24
    p = problems_table(runs)
    assert sorted(p.numeric["state"]) == ["failed", "running"]
    why = dict(zip(p.numeric["state"], p.numeric["why"]))
    assert why["failed"] == "NaN loss" and "no status.json" in why["running"]
    assert p.display["Progress"].tolist() == ["50%", "50%"]


def test_empty_inputs_give_empty_tables() -> None:
    empty_runs = pd.DataFrame(columns=["stage", "state", "usable"])
    tables = all_tables(empty_runs, group_runs(empty_runs))
    assert all(t.empty for t in tables)


def test_a_missing_key_and_selector_minus_one_find_their_own_comparison(tmp_path: Path) -> None:
    """ft_proj_selector -1 (the whole head) is a value: it must not match a group whose selector is missing."""
    from analysis.compare import comparisons
    from analysis.synthetic import write_run

    write_run(tmp_path, stage="finetune", ft_proj_selector=-1, label_fraction=0.01, top1=70.0)
    other = write_run(tmp_path, stage="finetune", label_fraction=0.01, top1=60.0)
    cfg = json.loads((other / "config.json").read_text())
    del cfg["finetune"]["ft_proj_selector"]  # a config without the key (written by hand, or by another tool)
    (other / "config.json").write_text(json.dumps(cfg))
    write_run(tmp_path, stage="supervised", label_fraction=0.01, top1=50.0)
    runs = collect(tmp_path).runs
    g = gain_table(group_runs(runs), comparisons(runs))
    by_sel = dict(zip(g.numeric["ft_proj_selector"].fillna(-99), g.display["Paired gain [95% CI]"]))
    assert by_sel == {-1: "+20.00 (n=1 seed, no interval)", -99: "+10.00 (n=1 seed, no interval)"}

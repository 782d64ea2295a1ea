"""Comparisons with their terms and flags, on synthetic sweeps with known curves (issue 16)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from analysis.collect import collect
from analysis.compare import comparisons
from analysis.summary import headline
from analysis.synthetic import model_config, write_run

A = model_config(depth=18, width=1.0)
B = model_config(depth=18, width=2.0)


def plateau(t: float) -> float:
    return 0.05 + 2.3 * math.exp(-12.0 * t)


def fitted(t: float) -> float:
    return 100.0 * (1.0 - math.exp(-12.0 * t))


def falling(t: float) -> float:
    return 2.3 * (1.0 - 0.8 * t)


CONVERGED = {"train/loss": plateau, "train/top1": fitted}
TRAIN = {"train": {"batch_size": 32, "epochs": 5, "max_steps": 0}}


def sweep(root: Path, *, ft: tuple[float, ...] = (62.0, 64.0, 66.0), sup: tuple[float, ...] = (60.0, 61.0, 65.0),
          sup_curves: dict = CONVERGED, sup_steps: int = 100, pretrain_steps: tuple[int, ...] = (200,),  # type: ignore[type-arg]
          models: tuple[dict, ...] = (A,)) -> Path:  # type: ignore[type-arg]
    for model, p_steps in zip(models, pretrain_steps):
        pre = write_run(root, stage="pretrain", model=model, total_steps=p_steps, final={"test/knn_top1": 50.0})
        for seed, top1 in enumerate(ft):
            write_run(root, stage="finetune", seed=seed, model=model, ft_proj_selector=1, label_fraction=0.01,
                      top1=top1 + (model["width"] - 1.0), parent=str(pre), metric_lines=160, extra_config=TRAIN,
                      curves=CONVERGED)
        for seed, top1 in enumerate(sup):
            write_run(root, stage="supervised", seed=seed, model=model, label_fraction=0.01, top1=top1,
                      total_steps=sup_steps, metric_lines=160, extra_config=TRAIN, curves=sup_curves)
    return root


def only(root: Path, kind: str):  # type: ignore[no-untyped-def]
    comps = [c for c in comparisons(collect(root).runs) if c.kind == kind]
    assert len(comps) == 1, comps
    return comps[0]


def test_converged_sides_on_three_seeds_hold(tmp_path: Path) -> None:
    c = only(sweep(tmp_path), "finetune_vs_supervised")
    assert c.flags == () and c.holds
    # differences 2, 3, 1: mean 2, half-width t(0.975, 2) * 1 / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    assert c.diff.mean == 2.0 and c.diff.lo == pytest.approx(-0.4841, abs=1e-4)
    assert c.diff.hi == pytest.approx(4.4841, abs=1e-4)
    assert c.a.budget() == "100 steps, 5 epochs, 3200 labelled images, backbone pretrained 200 steps"
    assert c.b.budget() == "100 steps, 5 epochs, 3200 labelled images, no pretraining"
    assert c.line().startswith("1% labels, R18 1× head 3, ft 1: fine-tuned − supervised: +2.00 [-0.48, +4.48] "
                               "(n=3 seeds) points (fine-tuned 64.00 vs supervised 62.00; fine-tuned: 100 steps")
    assert "FLAGGED" not in c.line()
    assert headline([c]).startswith("Headline (holds: converged, equal budgets, several seeds): 1% labels")


def test_a_baseline_still_falling_is_flagged(tmp_path: Path) -> None:
    c = only(sweep(tmp_path, sup_curves={"train/loss": falling, "train/top1": fitted}), "finetune_vs_supervised")
    assert len(c.flags) == 1 and c.flags[0].startswith("supervised not converged (train loss still falling")
    assert not c.holds and "⚑ FLAGGED: supervised not converged" in c.line()
    assert headline([c]) == ("Headline: none of the 1 comparisons holds (1 with a side not converged); every "
                             "number below is flagged ⚑ and is not a result")


def test_a_plateau_far_below_fitting_the_set_is_flagged(tmp_path: Path) -> None:
    c = only(sweep(tmp_path, sup_curves={"train/loss": plateau, "train/top1": lambda t: 45.0}),
             "finetune_vs_supervised")
    assert c.flags == ("supervised not converged (train top-1 45.0% on about 640 labelled images (a network fits "
                       "a set this small: >= 90% expected))",)


def test_unequal_labelled_budgets_are_flagged(tmp_path: Path) -> None:
    c = only(sweep(tmp_path, sup_steps=50), "finetune_vs_supervised")
    assert c.flags == ("budgets differ: 3200 vs 1600 labelled images seen",)
    assert c.b.budget().startswith("50 steps, 5 epochs, 1600 labelled images")


def test_one_seed_is_flagged_and_has_no_interval(tmp_path: Path) -> None:
    c = only(sweep(tmp_path, ft=(62.0,), sup=(60.0, 61.0)), "finetune_vs_supervised")
    assert c.flags == ("one seed: no interval",)
    assert c.diff.label() == "+2.00 (n=1 seed, no interval)" and c.diff.unpaired_b == (1,)


def test_unequal_pretraining_across_widths_is_flagged(tmp_path: Path) -> None:
    c = only(sweep(tmp_path, models=(A, B), pretrain_steps=(234, 120)), "across_models")
    assert c.what == "1% labels, head 3, ft 1: fine-tuned R18 2× − R18 1×"
    assert c.diff.mean == pytest.approx(1.0) and c.diff.lo == pytest.approx(1.0)  # +1 on every seed: sd 0
    assert c.flags == ("budgets differ: pretraining 120 vs 234 steps",)
    same = only(sweep(tmp_path / "eq", models=(A, B), pretrain_steps=(200, 200)), "across_models")
    assert same.flags == ()


def test_a_student_stopped_within_its_first_epoch_is_flagged(tmp_path: Path) -> None:
    import json

    teachers = [write_run(tmp_path, stage="finetune", seed=s, model=B, ft_proj_selector=1, label_fraction=0.01,
                          top1=70.0 + s, metric_lines=160, extra_config=TRAIN, curves=CONVERGED) for s in (0, 1)]
    for s, t in enumerate(teachers):
        student = write_run(tmp_path, stage="distill", seed=s, model=A, label_fraction=0.01, teacher=str(t), top1=68.0, metric_lines=160, curves={"train/loss": plateau},
                            extra_config={"train": {"batch_size": 128, "epochs": 1, "max_steps": 100}})
        prog = json.loads((student / "progress.json").read_text())
        (student / "progress.json").write_text(json.dumps({**prog, "epoch": 0}))  # still in its first epoch
    c = only(tmp_path, "distill_vs_teacher")
    assert c.diff.label() == "-2.50 [-8.85, +3.85] (n=2 seeds)"  # differences -2, -3: 12.7062 * 0.7071 / 1.4142
    assert c.flags == ("budgets short: train.max_steps stopped the student within its first epoch of the unlabelled "
                       "images (100 steps, 12.8k images)",)
    assert "1 with a short budget" in headline([c])


def test_the_pretrainings_memory_groups_tables_and_compares(tmp_path: Path) -> None:
    """SimCLRv2's memory is a pretraining axis: fine-tuned runs take their pretraining run's memory size, split
    into groups by it, and each size is compared with the same recipe without memory (paired by seed)."""
    from analysis.groups import group_runs
    from analysis.tables import ablation_table, memory_table, pretrain_table

    for memory, base in ((0, 62.0), (4096, 63.0)):
        pre = write_run(tmp_path, stage="pretrain", model=A, total_steps=200, final={"test/knn_top1": 50.0},
                        extra_config={"pretrain": {"memory_size": memory}} if memory else None)
        for seed, delta in enumerate((0.0, 2.0, 1.0)):
            write_run(tmp_path, stage="finetune", seed=seed, model=A, ft_proj_selector=1, label_fraction=0.01,
                      top1=base + delta * (memory > 0), parent=str(pre), metric_lines=160, extra_config=TRAIN,
                      curves=CONVERGED)
    runs = collect(tmp_path).runs
    # a pretraining config without the key (written before the memory existed) reads as memory 0
    assert sorted(runs.loc[runs["stage"] == "pretrain", "memory_size"]) == [0.0, 4096.0]
    assert sorted(runs.loc[runs["stage"] == "finetune", "memory_size"]) == [0.0] * 3 + [4096.0] * 3
    groups = group_runs(runs)
    ft = groups[groups["stage"] == "finetune"]
    assert len(ft) == 2 and any("memory 4,096" in lab for lab in ft["label"])
    assert not any("memory" in lab for lab in ft.loc[ft["memory_size"] == 0, "label"])  # labels of today unchanged
    comps = [c for c in comparisons(runs) if c.kind == "memory"]
    assert len(comps) == 1
    c = comps[0]
    assert c.a.label == "memory 4,096" and c.b.label == "no memory" and c.holds
    assert c.diff.mean == pytest.approx(2.0) and c.diff.n == 3  # (1 + 3 + 2) / 3
    table = memory_table(comparisons(runs))
    assert list(table.numeric["memory_size"]) == [4096.0] and table.display["Memory"].tolist() == ["memory 4,096"]
    assert ablation_table(groups).display["Memory"].tolist() == ["no memory", "memory 4,096"]
    assert pretrain_table(runs).display["Memory"].tolist() == ["no memory", "memory 4,096"]

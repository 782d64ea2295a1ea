from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.baselines import PixelKnn
from analysis.collect import collect
from analysis.summary import summarize
from analysis.synthetic import write_run


def test_summary_of_known_sweep(known_sweep: Path) -> None:
    lines = summarize(collect(known_sweep).runs)
    # the known sweep logs 10 loss points per run: too few for the convergence rule, so nothing holds
    assert lines[0] == ("Headline: none of the 8 comparisons holds (8 with convergence unknown, 1 with one seed); "
                        "every number below is flagged ⚑ and is not a result")
    assert lines[1].startswith("Best 1% labels, R50 2× SK head 3, ft 1: fine-tuned − supervised: +25.00 (n=1 seed, "
                               "no interval) points (fine-tuned 70.00 vs supervised 45.00; fine-tuned: 100 steps")
    assert lines[1].endswith("⚑ FLAGGED: fine-tuned: convergence unknown (3 train loss points in the last quarter; "
                             "the rule needs 4); supervised: convergence unknown (3 train loss points in the last "
                             "quarter; the rule needs 4); one seed: no interval")
    assert lines[2] == ("Semi-supervised gain over supervised (best fine-tuned group per fraction): +25.00 (n=1 seed, "
                        "no interval) at 1% ⚑, +5.00 [+5.00, +5.00] (n=2 seeds) at 10% ⚑; larger at 1% than at 10%, "
                        "as SimCLRv2 reports — ⚑ flagged comparisons, not a result")
    assert lines[3].startswith("1% labels, R18 1× head 3: fine-tune from head layer 1 − layer 0: +2.00 [+2.00, +2.00] "
                               "(n=2 seeds) points (layer 1 61.00 vs layer 0 59.00;")
    assert lines[4].startswith("Distillation: distilled R18 0.5× from R50 2× SK (1% labels): student − teacher: "
                               "-4.00 [-4.00, -4.00] (n=2 seeds) points")
    assert "student − supervised: +36.00 [+36.00, +36.00] (n=2 seeds)" in lines[4]
    assert lines[5].startswith("1% labels, head 3, ft 1: fine-tuned R50 2× SK − R18 1×: +10.00")
    assert lines[6].startswith("Pretraining kNN top-1: R18 1× 31.00; raw-pixel baseline n/a (data root ??? not found")
    assert lines[7] == "Not in these numbers: 2 run(s) (1 failed, 1 running); see the report"


def test_summary_says_what_is_missing(tmp_path: Path) -> None:
    write_run(tmp_path, stage="supervised", label_fraction=0.1, top1=50.0)
    lines = summarize(collect(tmp_path).runs)
    assert lines == [
        "Headline: none (no two groups of finished runs to compare)",
        "Fine-tuned vs supervised: n/a (needs fine-tuned and supervised runs of the same model and fraction)",
        "Semi-supervised gain: n/a (needs fine-tuned and supervised runs of the same model and fraction)",
        "Fine-tune from head layer 1 vs 0: n/a (no fine-tuned pairs differing only in ft_proj_selector)",
        "Distillation: n/a (no finished distillation runs)",
        "Model size: n/a (no fine-tuned groups differing only in the model)",
        "Pretraining kNN vs raw pixels: n/a (no finished pretraining runs)",
    ]


def test_summary_flags_a_gain_that_does_not_shrink(tmp_path: Path) -> None:
    for lf, ft, sup in ((0.01, 50.0, 45.0), (0.1, 70.0, 50.0)):
        write_run(tmp_path, stage="finetune", ft_proj_selector=1, label_fraction=lf, top1=ft)
        write_run(tmp_path, stage="supervised", label_fraction=lf, top1=sup)
    line = summarize(collect(tmp_path).runs)[2]
    assert "+5.00 (n=1 seed, no interval) at 1% ⚑, +20.00 (n=1 seed, no interval) at 10% ⚑" in line
    assert "NOT larger at 1% than at 10%" in line


def test_summary_shows_features_below_pixels(tmp_path: Path) -> None:
    pre = write_run(tmp_path, stage="pretrain", final={"test/knn_top1": 77.4})
    pixel = {str(pre): PixelKnn(81.0, None, "/data", 20, 5000, 10000, 200, True)}
    line = summarize(collect(tmp_path).runs, pixel=pixel)[6]
    assert line == ("Pretraining kNN top-1: R18 1× 77.40 vs 81.00 on raw pixels (the same kNN, memory bank and test "
                    "set); 1 model(s) below pixels: their features are worse than the raw images")
    missing = {str(pre): PixelKnn(None, "data root /data not found (a copied sweep folder?)", "/data", 20, 0, 0, 200,
                                  False)}
    assert summarize(collect(tmp_path).runs, pixel=missing)[6] == (
        "Pretraining kNN top-1: R18 1× 77.40; raw-pixel baseline n/a (data root /data not found (a copied sweep "
        "folder?))")


def test_summary_of_nothing() -> None:
    assert summarize(pd.DataFrame()) == ["No runs found."]

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.collect import collect
from analysis.summary import summarize
from analysis.synthetic import write_run


def test_summary_of_known_sweep(known_sweep: Path) -> None:
    lines = summarize(collect(known_sweep).runs)
    assert lines == [
        "Best 1% fine-tune top-1: 71.00 ± 1.41 (R50 2× SK, head 3, ft 1; n=2) vs supervised 45.00 (n=1): "
        "+26.00 points",
        "Semi-supervised gain over supervised: +21.67 at 1%, +5.00 at 10% (mean over 4 matched groups); "
        "larger at 1% than at 10%, as SimCLRv2 reports",
        "Fine-tune from head layer 1 vs 0: +3.00 points top-1 (mean over 1 matched groups; 1%: +3.00)",
        "Distillation at 1%: student R18 0.5× 67.00 vs teacher R50 2× SK 71.00 (-4.00) and vs supervised "
        "31.00 (+36.00)",
        "Model size at 1% fine-tune top-1: R18 1× (1.0M) 62.00, R50 2× SK (9.0M) 71.00",
        "Not in these numbers: 2 run(s) (1 failed, 1 running); see the report",
    ]


def test_summary_says_what_is_missing(tmp_path: Path) -> None:
    write_run(tmp_path, stage="supervised", label_fraction=0.1, top1=50.0)
    lines = summarize(collect(tmp_path).runs)
    assert len(lines) == 5
    assert lines[0].startswith("Best fine-tune top-1: n/a")
    assert lines[1].startswith("Semi-supervised gain: n/a") and lines[2].endswith("ft_proj_selector)")
    assert lines[3] == "Distillation: n/a (no finished distillation runs)"
    assert lines[4] == "Model size at 10% supervised top-1: R18 1× (1.0M) 50.00"


def test_summary_flags_a_gain_that_does_not_shrink(tmp_path: Path) -> None:
    for lf, ft, sup in ((0.01, 50.0, 45.0), (0.1, 70.0, 50.0)):
        write_run(tmp_path, stage="finetune", ft_proj_selector=1, label_fraction=lf, top1=ft)
        write_run(tmp_path, stage="supervised", label_fraction=lf, top1=sup)
    line = summarize(collect(tmp_path).runs)[1]
    assert "+5.00 at 1%, +20.00 at 10%" in line and "NOT larger at 1% than at 10%" in line


def test_summary_of_nothing() -> None:
    assert summarize(pd.DataFrame()) == ["No runs found."]

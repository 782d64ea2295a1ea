from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.table_render import Table, to_html, to_latex, to_markdown, write_table


def _table() -> Table:
    display = pd.DataFrame({"Model": ["R50 2× SK", "a|b"], "Top-1 1%": ["71.00 ± 1.41 (2)", "<b>&_#"]})
    numeric = pd.DataFrame({"model": ["R50", "ab"], "mean": [71.0, 1.5]})
    return Table(name="t1", title="Top-1 by model", caption="50% of runs", display=display, numeric=numeric)


def test_markdown_escapes_pipes() -> None:
    md = to_markdown(_table())
    lines = md.splitlines()
    assert lines[0] == "| Model | Top-1 1% |" and lines[1] == "|---|---|"
    assert lines[3] == "| a\\|b | <b>&_# |"
    assert md.rstrip().endswith("50% of runs")


def test_latex_escapes_specials_and_unicode() -> None:
    tex = to_latex(_table())
    assert r"\begin{tabular}{ll}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"Top-1 1\% \\" in tex
    assert r"R50 2$\times$ SK & 71.00 $\pm$ 1.41 (2) \\" in tex
    assert r"<b>\&\_\# \\" in tex
    assert r"\caption{Top-1 by model. 50\% of runs}" in tex


def test_html_escapes() -> None:
    h = to_html(_table())
    assert "<td>&lt;b&gt;&amp;_#</td>" in h and "<caption>50% of runs</caption>" in h


def test_write_table_files(tmp_path: Path) -> None:
    paths = write_table(_table(), tmp_path / "tables")
    assert [p.name for p in paths] == ["t1.md", "t1.csv", "t1.tex"]
    assert pd.read_csv(paths[1])["mean"].tolist() == [71.0, 1.5]  # CSV holds the numbers
    assert paths[0].read_text().startswith("### Top-1 by model")

"""A report table and its renderings: Markdown, LaTeX (booktabs), CSV and HTML.

Written by hand rather than through ``DataFrame.to_markdown`` / ``to_latex`` because those need
``tabulate`` / ``jinja2``, which are not dependencies of the suite and may be missing on a cluster.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["Table", "to_markdown", "to_latex", "to_html", "write_table"]


@dataclass
class Table:
    """One report table.

    ``display``: what a reader sees (all cells strings, e.g. ``71.20 ± 0.30 (3)``), rendered to
    Markdown, LaTeX and HTML. ``numeric``: the same content as numbers (mean, std, n and gain as
    separate columns), written to CSV for further analysis and checked by the tests.
    """

    name: str  # file stem: tables/<name>.{md,csv,tex}
    title: str
    caption: str
    display: pd.DataFrame
    numeric: pd.DataFrame

    @property
    def empty(self) -> bool:
        return bool(self.display.empty)


def _cell(x: object) -> str:
    return "" if x is None or (isinstance(x, float) and x != x) else str(x)


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown table (pipes in cells escaped), caption as a paragraph below."""
    df = table.display

    def esc(s: object) -> str:
        return _cell(s).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(esc(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False, name=None)]
    text = "\n".join([head, rule, *body])
    return text + (f"\n\n{table.caption}\n" if table.caption else "\n")


_LATEX_CHARS = {
    "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
    "±": r"$\pm$", "×": r"$\times$", "—": "---", "←": r"$\leftarrow$", "·": r"$\cdot$", "−": "-",
}


def _latex_escape(s: object) -> str:
    return "".join(_LATEX_CHARS.get(ch, ch) for ch in _cell(s))


def to_latex(table: Table, label: str | None = None) -> str:
    r"""A ``table`` float with a booktabs ``tabular`` (needs ``\usepackage{booktabs}``)."""
    df = table.display
    cols = "l" * len(df.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(table.title)}. "
             rf"{_latex_escape(table.caption)}}}", rf"\label{{tab:{label or table.name}}}",
             rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(_latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(v) for v in row) + r" \\" for row in df.itertuples(index=False, name=None)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    """An HTML ``<table>`` (escaped), caption as ``<caption>``."""
    df = table.display
    head = "".join(f"<th>{html.escape(_cell(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False, name=None))
    cap = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f'<table class="t">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_table(table: Table, out_dir: str | Path) -> list[Path]:
    """Write ``<name>.md``, ``<name>.csv`` (numeric) and ``<name>.tex`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{table.name}.md", out / f"{table.name}.csv", out / f"{table.name}.tex"]
    paths[0].write_text(f"### {table.title}\n\n" + to_markdown(table), encoding="utf-8")
    table.numeric.to_csv(paths[1], index=False)
    paths[2].write_text(to_latex(table), encoding="utf-8")
    return paths

"""The report page in two forms: ``report.md`` and a self-contained ``report.html``.

The HTML page carries everything inside it (CSS inline, figures as base64 PNG ``data:`` URIs, no
scripts, no fonts or styles fetched from anywhere) so that a researcher can copy the one file off
the cluster and open it on any machine, offline.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from analysis.plots import FigureFile
from analysis.table_render import Table, to_html, to_markdown

__all__ = ["Section", "render_markdown", "render_html"]


@dataclass
class Section:
    """One part of the report: a heading, short paragraphs, bullet lines, tables and figures."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureFile] = field(default_factory=list)
    collapsed: bool = False  # HTML: inside a closed <details> (long warning lists)


def render_markdown(title: str, sections: list[Section], base: Path) -> str:
    """Markdown page; figures linked by path relative to ``base`` (the report folder)."""
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            out += [p, ""]
        if sec.bullets:
            out += [f"- {b}" for b in sec.bullets] + [""]
        for t in sec.tables:
            out += [f"### {t.title}", "", to_markdown(t)]
        for f in sec.figures:
            rel = f.png.relative_to(base) if f.png.is_relative_to(base) else f.png
            out += [f"### {f.title}", "", f"![{f.title}]({rel.as_posix()})", "", f.caption,
                    f"([SVG]({(f.svg.relative_to(base) if f.svg.is_relative_to(base) else f.svg).as_posix()}))", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}
h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #eee}
h3{font-size:1.05em;margin-top:1.4em}
table.t{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.85em;display:block;overflow-x:auto}
table.t th,table.t td{border:1px solid #ddd;padding:.25em .6em;text-align:left;white-space:nowrap}
table.t th{background:#f5f5f5}
table.t tr:nth-child(even) td{background:#fafafa}
table.t caption{caption-side:bottom;text-align:left;color:#555;font-size:.95em;padding-top:.3em;white-space:normal}
figure{margin:1em 0 2em}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
.summary li{margin:.2em 0}
.warn li{font-family:ui-monospace,monospace;font-size:.8em;color:#8a4b00}
nav a{margin-right:1em}
"""


def _anchor(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")


def render_html(title: str, sections: list[Section], subtitle: str = "") -> str:
    """One self-contained HTML page (figures embedded as base64 PNG)."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    if subtitle:
        parts.append(f"<p>{esc(subtitle)}</p>")
    parts.append("<nav>" + "".join(f'<a href="#{_anchor(s.title)}">{esc(s.title)}</a>' for s in sections) + "</nav>")
    for sec in sections:
        body: list[str] = []
        for p in sec.paragraphs:
            body.append(f"<p>{esc(p)}</p>")
        if sec.bullets:
            cls = "warn" if sec.collapsed else "summary"
            body.append(f'<ul class="{cls}">' + "".join(f"<li>{esc(b)}</li>" for b in sec.bullets) + "</ul>")
        for t in sec.tables:
            body.append(f"<h3>{esc(t.title)}</h3>{to_html(t)}")
        for f in sec.figures:
            data = base64.b64encode(f.png_bytes).decode("ascii")
            body.append(f'<figure id="fig-{esc(f.name)}"><h3>{esc(f.title)}</h3>'
                        f'<img alt="{esc(f.title)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(f.caption)}</figcaption></figure>")
        head = f'<h2 id="{_anchor(sec.title)}">{esc(sec.title)}</h2>'
        if sec.collapsed:
            parts.append(f"{head}<details><summary>show</summary>{''.join(body)}</details>")
        else:
            parts.append(head + "".join(body))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

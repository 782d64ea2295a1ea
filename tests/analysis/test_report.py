from __future__ import annotations

import html
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import ReportResult, build_report, main
from analysis.synthetic import write_run

FIGURES = ["top1_vs_params", "gain_vs_params", "head_ablation", "distillation", "curves_pretrain",
           "curves_finetune", "curves_distill", "curves_supervised", "curves_linear_eval"]
TABLES = ["run_status", "runs_not_in_numbers", "comparisons", "table1_ablation", "semi_supervised_gain", "head_ablation",
          "label_fraction_curves", "distillation", "pretraining"]


@pytest.fixture(scope="module")
def report(known_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    return build_report(known_sweep, tmp_path_factory.mktemp("report"))


def test_report_files(report: ReportResult) -> None:
    out = report.out
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 24 and set(runs["state"]) == {"done", "running", "failed"}
    assert (out / "runs.parquet").exists() == (importlib.util.find_spec("pyarrow") is not None)
    assert len(pd.read_csv(out / "groups.csv")) == len(report.groups) == 11
    assert [t.name for t in report.tables] == TABLES
    for name in TABLES:
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    assert [f.name for f in report.figures] == FIGURES
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").exists() and (out / "figures" / f"{name}.svg").exists()
    md = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"](figures/{name}.png)" in md and f"](figures/{name}.svg)" in md
    for t in report.tables:
        assert f"### {t.title}" in md
    assert report.summary[0] in md
    assert report.warnings == [] and (out / "warnings.txt").read_text() == ""


def test_html_is_self_contained(report: ReportResult) -> None:
    page = (report.out / "report.html").read_text()
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert "<link" not in page and "@import" not in page and "url(" not in page and "<script" not in page
    assert "http://" not in page and "https://" not in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Injected into a copy of the page: records script errors, console.error calls and failed resource loads
# (capture phase: an <img> error does not bubble), then, on load, every image's decoded size.
_PROBE = ("<script>window.__errs=[];addEventListener('error',e=>__errs.push(e.message?String(e.message):"
          "'resource failed: '+String(e.target&&(e.target.src||e.target.href)).slice(0,80)),true);"
          "const __ce=console.error;console.error=(...a)=>{__errs.push(a.map(String).join(' '));__ce.apply(console,a)};"
          "</script>")
_REPORTER = ("<script>addEventListener('load',()=>{const r=document.createElement('pre');r.id='__probe';"
             "r.textContent=JSON.stringify({imgs:[...document.images].map(i=>[i.complete,i.naturalWidth,"
             "i.naturalHeight]),errs:__errs,figures:document.querySelectorAll('figure').length});"
             "document.body.appendChild(r)});</script>")


def _render(page: str, tmp_path: Path) -> tuple[dict, list[str]]:  # type: ignore[type-arg]
    """Open ``page`` in headless Chromium; returns the probe's record and the console lines of its log."""
    assert page.count("<head>") == 1 and page.count("</body>") == 1
    probe = tmp_path / "page.html"
    probe.write_text(page.replace("<head>", "<head>" + _PROBE).replace("</body>", _REPORTER + "</body>"))
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<pre id="__probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, "the load handler did not run: " + proc.stdout[-500:]
    return json.loads(html.unescape(m.group(1))), [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]


needs_chromium = pytest.mark.skipif(_chromium() is None,
                                    reason="chromium is not installed (tools/setup_system.sh installs it)")


@needs_chromium
def test_html_renders_in_headless_chromium(report: ReportResult, tmp_path: Path) -> None:
    page = (report.out / "report.html").read_text()
    # the known sweep's runs log too few points for the convergence rule: every comparison is flagged
    assert "⚑ FLAGGED" in page and "<th>⚑</th>" in page
    result, console = _render(page, tmp_path)
    assert result["errs"] == [] and console == []
    assert result["figures"] == len(FIGURES) and len(result["imgs"]) == len(FIGURES)
    assert all(complete and w > 0 and h > 0 for complete, w, h in result["imgs"]), result["imgs"]


@needs_chromium
def test_chromium_probe_catches_a_broken_figure(report: ReportResult, tmp_path: Path) -> None:
    page = (report.out / "report.html").read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]*"', 'src="data:image/png;base64,AAAA"', page, count=1)
    result, _ = _render(broken, tmp_path)
    assert result["imgs"][0][1] == 0 and all(w > 0 for _, w, _ in result["imgs"][1:])
    assert len(result["errs"]) == 1 and result["errs"][0].startswith("resource failed")


@pytest.mark.slow  # two whole reports (~6 s on 2 shared cores)
def test_main_default_out_and_rerun(known_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(known_sweep, sweep)
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "Best 1% labels, R50 2× SK head 3, ft 1: fine-tuned − supervised" in out and str(sweep / "report" / "report.html") in out
    assert main([str(sweep)]) == 0  # the report folder itself is never read as runs
    assert len(pd.read_csv(sweep / "report" / "runs.csv")) == 24


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
    assert (tmp_path / "out" / "report.html").exists() and "No runs found." in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--workers", "0"])


def test_damaged_sweep_still_reported(known_sweep: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(known_sweep, sweep)
    ft = sorted((sweep / "runs" / "finetune").iterdir())
    # 1. a truncated last metrics line (writer killed mid-line)
    truncated = ft[0] / "metrics.jsonl"
    with open(truncated, "a") as f:
        f.write('{"step": 101, "epoch": 9, "stage": "fine')
    # 2. a missing final metric
    no_metric = next(p for p in ft if p.name.endswith("-s1") and "ft0-lf0.01" in p.name) / "status.json"
    status = json.loads(no_metric.read_text())
    del status["final"]["test/top1"]
    no_metric.write_text(json.dumps(status))
    # 3. a run with no config
    no_config = sorted((sweep / "runs" / "supervised").iterdir())[0]
    (no_config / "config.json").unlink()
    (no_config / "config.yaml").unlink()
    # 4. a second sweep mixed in, and 5. an unreadable progress.json
    other = write_run(sweep, stage="pretrain", sweep="other-sweep", seed=9, extra_config={"train": {"epochs": 5}})
    (other / "progress.json").write_text("{")

    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 0
    warnings = (out / "warnings.txt").read_text()
    assert f"{truncated}: truncated last line" in warnings
    assert f"{no_metric}: final lacks test/top1" in warnings
    assert f"{no_config}: no usable config" in warnings
    assert "several sweeps" in warnings and str(other / "config.json") in warnings
    assert f"{other / 'progress.json'}: unreadable JSON" in warnings
    # the rest of the report is still made, numbers of untouched groups unchanged
    assert all((out / "figures" / f"{n}.png").exists() for n in FIGURES)
    page = (out / "report.html").read_text()
    assert "Warnings (" in page and html.escape(str(truncated)) in page
    gain = pd.read_csv(out / "tables" / "semi_supervised_gain.csv")
    ft1 = gain[(gain["depth"] == 18) & (gain["ft_proj_selector"] == 1) & (gain["label_fraction"] == 0.01)]
    assert ft1["finetune mean"].tolist() == [62.0]
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 25 and not runs.loc[runs["path"] == str(no_config), "usable"].item()

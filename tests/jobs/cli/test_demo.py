"""``make demo``: which data root it prepares, read from the overrides as Hydra reads them (no sweep is run)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jobs.cli import demo
from jobs.sweep.expand import SweepError


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The demo with data preparation and the sweep stubbed out: what it prepared and composed."""
    seen: dict[str, Any] = {"prepared": []}
    monkeypatch.setattr(demo, "DEFAULT_DATA_ROOT", tmp_path / "default")
    monkeypatch.setattr(demo, "prepare_data", lambda root: seen["prepared"].append(root))

    def compose_sweep(name: str, overrides: list[str]) -> Any:
        seen["overrides"] = list(overrides)
        return SimpleNamespace(sweep_dir=str(tmp_path / "sweep"))

    monkeypatch.setattr(demo, "compose_sweep", compose_sweep)
    monkeypatch.setattr(demo, "submit_sweep", lambda sweep: None)
    return seen


def _run(*overrides: str) -> None:
    assert demo.main([*overrides, "--no-watch"]) == 0


def test_no_data_override_prepares_and_uses_the_default_root(calls: dict[str, Any], tmp_path: Path) -> None:
    _run()
    assert calls["prepared"] == [tmp_path / "default"]
    assert calls["overrides"] == [f"data.root={tmp_path / 'default'}"]


@pytest.mark.parametrize("override, root", [
    ("data.root=/data/fm", "/data/fm"),
    ("data.root='/my data/fm'", "/my data/fm"),  # was prepared at "'/my data/fm'", quotes and all
    ("data.root='/data/a=b'", "/data/a=b"),  # '=' inside the (quoted) value
    ("+data.root=/data/plus", "/data/plus"),  # was missed: the default root was prepared and appended after it
])
def test_the_data_root_is_the_one_hydra_reads(calls: dict[str, Any], override: str, root: str) -> None:
    _run("train.epochs=1", override)
    assert calls["prepared"] == [Path(root)]
    assert calls["overrides"] == ["train.epochs=1", override]  # passed on as given, nothing appended


def test_the_last_data_root_wins_as_in_the_sweep(calls: dict[str, Any]) -> None:
    """The sweep applies the last one; the first was prepared (a folder the sweep never read)."""
    _run("data.root=/first", "data.root=/last")
    assert calls["prepared"] == [Path("/last")]


@pytest.mark.parametrize("group", ["data=imagefolder", "+data=imagefolder"])
def test_another_data_set_is_not_prepared(calls: dict[str, Any], group: str) -> None:
    _run(group, "data.root=/imagenet")
    assert calls["prepared"] == [] and calls["overrides"] == [group, "data.root=/imagenet"]


def test_an_override_that_does_not_parse_fails_before_any_data_is_prepared(
    calls: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """``data.root=/a=b`` (unquoted) does not parse: the shards were made at /a=b first, then the sweep failed."""
    assert demo.main(["data.root=/a=b", "--no-watch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("demo: error: ") and "bad override 'data.root=/a=b'" in err
    assert calls["prepared"] == [] and "overrides" not in calls


def test_a_bad_sweep_is_one_error_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch, calls: dict[str, Any],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    def compose_sweep(name: str, overrides: list[str]) -> Any:
        raise SweepError("sweep definition key 'stages.nope': unknown stage")

    monkeypatch.setattr(demo, "compose_sweep", compose_sweep)
    assert demo.main(["--no-watch"]) == 2
    assert capsys.readouterr().err == "demo: error: sweep definition key 'stages.nope': unknown stage\n"


def test_data_refused_before_queueing_is_one_error_line(monkeypatch: pytest.MonkeyPatch, calls: dict[str, Any],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A data root too small for a task's batch (or broken) is refused by the pre-queue check: exit 2 with its
    message, as simclr-sweep does; the demo let it out as a traceback."""
    from jobs.sweep.preflight import DataSizeError

    def submit_sweep(sweep: Any) -> None:
        raise DataSizeError("1 task(s) would stop on their nodes ...: train.batch_size=64 exceeds the 40 labelled")

    monkeypatch.setattr(demo, "submit_sweep", submit_sweep)
    assert demo.main(["data=imagefolder", "data.root=/small", "--no-watch"]) == 2
    assert capsys.readouterr().err.startswith("demo: error: 1 task(s) would stop")


def test_the_dry_run_prints_the_cost_and_makes_no_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    made: list[Path] = []
    monkeypatch.setattr(demo, "prepare_data", made.append)
    monkeypatch.setattr(demo, "DEFAULT_DATA_ROOT", tmp_path / "data")
    assert demo.main(["--dry-run", f"sweep_dir={tmp_path / 'sw'}"]) == 0
    out = capsys.readouterr().out
    assert "# cost before the queue" in out and "#   pretrain" in out and out.count("#SBATCH --array=") == 5
    assert made == [] and not (tmp_path / "sw").exists()

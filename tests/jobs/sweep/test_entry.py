"""The task entry point's signal logic (jobs/sweep/entry.py) and the profile key that configures it."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.config.cluster import load_profile, profile_from_dict, slurm_parameters, task_command
from jobs.sweep import entry

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    entry._early.clear()


def test_sigterm_action_defaults_to_requeue_and_names_a_bad_value() -> None:
    assert entry.sigterm_action({}) == "requeue"
    assert entry.sigterm_action({entry.SIGTERM_ENV: "stop"}) == "stop"
    with pytest.raises(ValueError, match="SIMCLR_SIGTERM='kill'"):
        entry.sigterm_action({entry.SIGTERM_ENV: "kill"})


def test_an_early_signal_is_recorded_then_delivered_to_the_handler_in_place(handlers: None) -> None:
    entry.install_early()
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)  # once is enough: a second TERM adds nothing
    seen: list[int] = []
    signal.signal(signal.SIGUSR2, lambda s, f: seen.append(s))  # stands in for submitit's requeue handler
    entry.route_sigterm("requeue")
    assert entry.deliver_early() == [signal.SIGTERM]
    assert seen == [signal.SIGTERM] and entry.deliver_early() == []


def test_stop_turns_sigterm_into_a_recorded_error(handlers: None) -> None:
    entry.route_sigterm("stop")
    with pytest.raises(entry.TerminationRequested, match="stopped by SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # a bytecode boundary for the handler to run at


def test_entry_imports_nothing_heavy_before_its_handlers() -> None:
    """The point of the module: numpy, submitit, torch come after the handlers are in place."""
    code = ("import sys, jobs.sweep.entry as e; e.install_early(); "
            "print(sorted(m for m in ('numpy', 'submitit', 'torch', 'simclr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_profile_sigterm_key_is_validated_and_exported_to_the_task() -> None:
    with pytest.raises(ValueError, match="'sigterm'"):
        profile_from_dict({"sigterm": "ignore"})
    p = dataclasses.replace(load_profile("local"), sigterm="stop")
    assert "export SIMCLR_SIGTERM=stop" in slurm_parameters(p)["setup"]
    assert "export SIMCLR_SIGTERM=requeue" in slurm_parameters(load_profile("local"))["setup"]
    assert task_command("/py", "/a b/%j") == "/py -u -m jobs.sweep.entry '/a b/%j'"


def test_a_cancel_is_told_from_a_time_limit_by_the_jobs_reason() -> None:
    """What scontrol showed at the TERM (measured here): scancel -> COMPLETING, Reason=None; the time limit ->
    COMPLETING, Reason=TimeLimit; scancel --signal=TERM (a signal, no cancel) -> RUNNING."""
    def shows(text: str) -> Any:
        return lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=text, stderr="")

    env = {"SLURM_JOB_ID": "475"}
    assert entry.cancelled(env, shows("JobId=475 JobName=x JobState=COMPLETING Reason=None Dependency=(null)"))
    assert not entry.cancelled(env, shows("JobId=476 JobState=COMPLETING Reason=TimeLimit Dependency=(null)"))
    assert not entry.cancelled(env, shows("JobId=477 JobState=RUNNING Reason=None Dependency=(null)"))
    assert not entry.cancelled({}, shows("JobState=COMPLETING Reason=None"))  # not under SLURM


def test_a_cancelled_jobs_early_term_stops_instead_of_requeueing(handlers: None, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    seen: list[int] = []
    signal.signal(signal.SIGUSR2, lambda s, f: seen.append(s))
    entry.route_sigterm("requeue")
    monkeypatch.setattr(entry, "cancelled", lambda: True)
    with pytest.raises(entry.TerminationRequested, match=r"job was cancelled \(scancel\)"):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)
    assert seen == []
    monkeypatch.setattr(entry, "cancelled", lambda: False)
    os.kill(os.getpid(), signal.SIGTERM)
    signal.sigtimedwait([], 0)
    assert seen == [signal.SIGTERM]  # any other TERM: the requeue handler

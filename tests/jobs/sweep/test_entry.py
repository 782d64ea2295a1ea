"""The task entry point's signal logic (jobs/sweep/entry.py) and the profile key that configures it."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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
    assert signal.getsignal(signal.SIGTERM) is signal.getsignal(signal.SIGUSR2)
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

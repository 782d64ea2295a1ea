"""Preemption requests: a signal sets a flag; the training loop acts on it at the next step boundary.

Saving inside a signal handler could catch the model half-way through an optimizer step. Instead the
handler only records the request; the loop (``simclr.train.loop``) agrees across ranks that a request
arrived, writes a checkpoint of a consistent state and raises :class:`PreemptionRequested`. The job layer
(``jobs.sweep.launch``) catches that and hands over to submitit's own requeue path. The one exception is work
after the last checkpoint (the final evaluation, :func:`interruptible`): there nothing is left to save, so
the handler raises at once, in the process and on the rank that entered it only.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_requested = threading.Event()
_signum: int | None = None


class PreemptionRequested(Exception):
    """Raised by the loop after it saved a checkpoint because a preemption signal arrived."""

    def __init__(self, signum: int | None, step: int) -> None:
        super().__init__(f"preemption signal {signum} handled: checkpoint saved at step {step}")
        self.signum = signum
        self.step = step


# Inside interruptible(): (the process that entered it, the step whose checkpoint is on disk). The pid, because
# data-loader workers are forked copies of this process: the signal reaches them too, and one that raised
# would die (or have its exception rebuilt as a RuntimeError) and fail the job instead of requeueing it.
_interrupt_at: tuple[int, int] | None = None


def _handler(signum: int, frame: FrameType | None) -> None:
    global _signum
    _signum = signum
    _requested.set()
    if _interrupt_at is not None and _interrupt_at[0] == os.getpid():
        raise PreemptionRequested(signum, _interrupt_at[1])


@contextmanager
def interruptible(step: int, enabled: bool = True) -> Iterator[None]:
    """Work after the last checkpoint (the final evaluation): a signal raises :class:`PreemptionRequested`
    at once instead of waiting for a step boundary that never comes. There is nothing to save, so the job
    requeues before the time limit kills it (an evaluation longer than the signal's lead time ended as
    TIMEOUT, and its dependants with it); the restart only evaluates again. A signal that came before is
    acted on at entry. ``enabled=False`` (ranks other than 0): nothing changes; rank 0's requeue ends them,
    while a rank that raised on its own after rank 0 finished would fail the job."""
    global _interrupt_at
    if not enabled:
        yield
        return
    if requested():
        raise PreemptionRequested(signum(), step)
    _interrupt_at = (os.getpid(), step)
    try:
        yield
    finally:
        _interrupt_at = None


def install(signals: Iterable[int] = (signal.SIGUSR2,)) -> dict[int, Any]:
    """Route ``signals`` to the request flag; returns the previous handlers (to restore or chain to)."""
    previous: dict[int, Any] = {}
    for s in signals:
        previous[s] = signal.signal(s, _handler)
    return previous


def restore(previous: dict[int, Any]) -> None:
    """Put back handlers returned by :func:`install`."""
    for s, h in previous.items():
        signal.signal(s, h)


def requested() -> bool:
    """True once a routed signal arrived (until :func:`clear`)."""
    return _requested.is_set()


def signum() -> int | None:
    """The signal that set the flag, if any."""
    return _signum


def request(sig: int | None = None) -> None:
    """Set the flag programmatically (tests, or a wall-clock budget)."""
    global _signum
    _signum = sig
    _requested.set()


def clear() -> None:
    global _signum
    _signum = None
    _requested.clear()

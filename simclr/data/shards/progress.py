"""Progress reporting for long data jobs: a bar on a terminal, plain log lines in batch jobs (SLURM logs).

No dependency (tqdm is not in the project's requirements): a bar is a single ``\\r``-rewritten line on a TTY;
elsewhere a log line every ``log_every_s`` seconds and at the end, so a job log shows steady progress without
carriage-return garbage.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("simclr.data")


class Progress:
    """``p = Progress(total, "train"); p.update(n); p.close()`` — ``total`` may be None (unknown)."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        log_every_s: float = 30.0,
        enabled: bool = True,
    ) -> None:
        self.total = total
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.log_every_s = log_every_s
        self.enabled = enabled
        self.done = 0
        self.t0 = time.monotonic()
        self._last = self.t0
        self._closed = False

    def _text(self) -> str:
        dt = max(time.monotonic() - self.t0, 1e-9)
        rate = self.done / dt
        if self.total:
            frac = min(self.done / self.total, 1.0)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            return f"{self.desc}: {self.done}/{self.total} ({100 * frac:.0f}%) {rate:.0f}/s eta {eta:.0f}s"
        return f"{self.desc}: {self.done} {rate:.0f}/s"

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.1 or (self.total is not None and self.done >= self.total):
                width = 30
                frac = min(self.done / self.total, 1.0) if self.total else 0.0
                bar = "#" * int(width * frac) + "-" * (width - int(width * frac))
                self.stream.write(f"\r[{bar}] {self._text()}")
                self.stream.flush()
                self._last = now
        elif now - self._last >= self.log_every_s:
            log.info(self._text())
            self._last = now

    def close(self) -> None:
        if self._closed or not self.enabled:
            return
        self._closed = True
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        log.info(self._text() + " done")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Atomic writes: the file appears whole, with the mode a plain open() would give it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from simclr.atomic import atomic_write_json, atomic_write_text, current_umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """mkstemp made every status.json, config, key list and checkpoint 0600: a labmate could not read them."""
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"k": 1})
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert not list(tmp_path.glob(".*.tmp"))

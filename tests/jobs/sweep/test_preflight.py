"""The data check before anything is queued (jobs/sweep/preflight.py) on a real tiny data root, damaged."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from jobs.config.stage import compose, to_dict
from jobs.sweep.preflight import check_data
from simclr.data.errors import DataError, ManifestError


@pytest.fixture
def root(tiny_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(tiny_root, copy)
    return copy


def _config(stage: str, root: Path, *extra: str) -> dict[str, Any]:
    parent = [] if stage in ("pretrain", "supervised") else ["parent=/p"]
    return to_dict(compose(stage, ["run_dir=/r", f"data.root={root}", "finetune.label_fraction=0.1", *parent,
                                   *extra]))


def test_an_intact_root_passes(root: Path) -> None:
    check_data([_config(s, root) for s in ("pretrain", "finetune", "supervised", "distill", "linear_eval")])


def test_a_truncated_shard_is_named(root: Path) -> None:
    shard = root / "train" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:20000])
    with pytest.raises(DataError, match=r"truncated shard: 20000 of \d+ bytes.*shard-000001\.tar"):
        check_data([_config("pretrain", root)])
    check_data([_config("pretrain", root, "data.bad_sample_budget=100")])  # the task may drop those samples


def test_a_deleted_shard_a_broken_manifest_and_a_missing_key_list(root: Path) -> None:
    (root / "test" / "shard-000000.tar").unlink()
    with pytest.raises(DataError, match=r"missing shard \(64 samples\).*test/shard-000000\.tar"):
        check_data([_config("pretrain", root)])
    (root / "test" / "manifest.json").write_text("{torn")
    with pytest.raises(ManifestError, match="unreadable manifest"):
        check_data([_config("pretrain", root)])
    shutil.rmtree(root / "test")
    shutil.copytree(root / "train", root / "test")  # a whole split again; now the key list
    (root / "train" / "fractions" / "10percent.txt").unlink()
    check_data([_config("pretrain", root)])  # pretraining reads no key list
    with pytest.raises(DataError, match=r"finetune.label_fraction=0.1: no key list .*10percent\.txt"):
        check_data([_config("finetune", root)])

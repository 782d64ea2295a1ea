"""The data check before anything is queued (jobs/sweep/preflight.py) on a real tiny data root, damaged or too
small for a task's batch or evaluations."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs.config.stage import compose, to_dict
from jobs.sweep.preflight import DataSizeError, check_data
from simclr.data.errors import DataError, ManifestError
from simclr.data.shards.sources import array_samples
from simclr.data.shards.write import write_shards


@pytest.fixture
def root(tiny_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(tiny_root, copy)
    return copy


def _config(stage: str, root: Path, *extra: str) -> dict[str, Any]:
    """A stage config reading ``root``, with a batch that fits tiny_root's smallest list (10%: 20 keys)."""
    parent = [] if stage in ("pretrain", "supervised") else ["parent=/p"]
    return to_dict(compose(stage, ["run_dir=/r", f"data.root={root}", "finetune.label_fraction=0.1", *parent,
                                   "train.batch_size=16", *extra]))


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


# ---- sizes -------------------------------------------------------------------------------------------------
STAGES = ("pretrain", "finetune", "supervised", "distill", "linear_eval")


def _refused(configs: list[dict[str, Any]], ranks: dict[str, int] | None = None) -> str:
    with pytest.raises(DataSizeError) as e:
        check_data(configs, ranks)
    return str(e.value)


@pytest.mark.parametrize("stage, n, what", [
    ("pretrain", 240, "samples of split 'train'"),  # every sample (two views)
    ("distill", 240, "samples of split 'train'"),
    ("finetune", 20, "labelled samples of finetune.label_fraction=0.1 (key list "),  # the 10% list: 20 keys
    ("supervised", 20, "labelled samples of finetune.label_fraction=0.1 (key list "),
    ("linear_eval", 20, "labelled samples of finetune.label_fraction=0.1 (key list "),
])
def test_a_global_batch_larger_than_the_training_samples_is_refused(root: Path, stage: str, n: int,
                                                                    what: str) -> None:
    """The issue's case: batch 64 over 40 labels failed on every node (the training loader drops the ragged last
    batch: no batch per epoch). The message names stage, point, the batch key and, for labels, the fraction key."""
    msg = _refused([_config(stage, root, f"train.batch_size={n + 1}", "point=p1")])
    assert f"{stage}, point 'p1' (run r): train.batch_size={n + 1} exceeds the {n} {what}" in msg
    assert ("raise finetune.label_fraction" in msg) == (n == 20)
    assert "nothing was queued" in msg
    check_data([_config(stage, root, f"train.batch_size={n}")])  # exactly one batch fits


@pytest.fixture
def mixed_root(tmp_path: Path) -> Path:
    """train: 30 labelled + 30 unlabelled images (STL-10 style), test: 20 labelled; no key lists."""
    rng = np.random.default_rng(0)
    root = tmp_path / "mixed"
    labels = np.r_[np.arange(30) % 2, np.full(30, -1)]
    write_shards(array_samples(rng.integers(0, 255, (60, 8, 8), dtype=np.uint8), labels, ["a", "b"], "tr"),
                 root, split="train", max_count=32)
    write_shards(array_samples(rng.integers(0, 255, (20, 8, 8), dtype=np.uint8), np.arange(20) % 2, ["a", "b"],
                             "te"), root, split="test")
    return root


def test_a_memory_as_large_as_an_epoch_is_refused(root: Path) -> None:
    """240 train samples, batch 16: 240 an epoch. A queue of 240 would hold every image."""
    check_data([_config("pretrain", root, "pretrain.memory_size=239")])
    with pytest.raises(DataSizeError, match=r"pretrain.memory_size=240 holds at least the 240 samples of an epoch"):
        check_data([_config("pretrain", root, "pretrain.memory_size=240")])


def test_labelled_stages_count_the_labelled_samples_and_distill_every_sample(mixed_root: Path) -> None:
    """label_fraction=1.0 means all LABELLED samples (labelled_only); distillation reads the unlabelled too."""
    full = "finetune.label_fraction=1.0"
    msg = _refused([_config("supervised", mixed_root, full, "train.batch_size=31")])
    assert ("train.batch_size=31 exceeds the 30 labelled samples of split 'train' (finetune.label_fraction=1: "
            "all labels)") in msg
    check_data([_config("supervised", mixed_root, full, "train.batch_size=30"),
                _config("distill", mixed_root, full, "train.batch_size=60"),
                _config("pretrain", mixed_root, "train.batch_size=60")])
    assert "exceeds the 60 samples" in _refused([_config("distill", mixed_root, full, "train.batch_size=61")])


def test_the_global_batch_is_shared_by_the_ranks_not_multiplied(root: Path) -> None:
    """train.batch_size is the global batch (each rank loads batch / ranks): it must divide by the ranks of the
    stage's profile, and 240 over 4 ranks fits 240 samples -- batch x ranks would have refused it."""
    msg = _refused([_config("pretrain", root, "point=p2")], ranks={"pretrain": 3})
    assert ("pretrain, point 'p2' (run r): train.batch_size=16 (the global batch) is not divisible by the 3 ranks"
            in msg and "stages.pretrain.resources" in msg)
    check_data([_config("pretrain", root, "train.batch_size=240")], ranks={"pretrain": 4})
    check_data([_config("finetune", root)], ranks={"pretrain": 3})  # another stage's ranks do not apply


def test_an_evaluation_split_without_labels_is_refused_where_it_is_scored(mixed_root: Path) -> None:
    """classify raises on a split without a labelled sample: every classifier stage, and pretraining's probe."""
    shutil.rmtree(mixed_root / "test")
    rng = np.random.default_rng(1)
    write_shards(array_samples(rng.integers(0, 255, (10, 8, 8), dtype=np.uint8), np.full(10, -1), ["a", "b"], "u"),
                 mixed_root, split="test")
    full = "finetune.label_fraction=1.0"
    for stage in ("finetune", "supervised", "linear_eval", "distill"):
        msg = _refused([_config(stage, mixed_root, full, "point=p3")])
        assert f"{stage}, point 'p3' (run r): split 'test' (data.eval_split) has no labelled sample" in msg
    msg = _refused([_config("pretrain", mixed_root)])
    assert "the online probe's test accuracy" in msg and "pretrain.probe=false" in msg
    check_data([_config("pretrain", mixed_root, "pretrain.probe=false")])  # kNN on it: 0 %, but no error


def test_a_training_split_without_labels_leaves_the_knn_bank_empty(mixed_root: Path) -> None:
    """Pretraining's final kNN (whatever knn_every_epochs says) draws its bank from the labelled train samples;
    an empty bank raised in knn_top1 after the whole run. k above the bank size is fine (min(k, bank))."""
    rng = np.random.default_rng(2)
    write_shards(array_samples(rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), np.full(40, -1), ["a", "b"], "u"),
                 mixed_root, split="unl")
    msg = _refused([_config("pretrain", mixed_root, "data.train_split=unl", "pretrain.knn_every_epochs=0",
                            "point=p4")])
    assert "pretrain, point 'p4' (run r): split 'unl' (data.train_split) has no labelled sample: the final kNN" in msg
    check_data([_config("pretrain", mixed_root, "pretrain.knn_k=500", "train.batch_size=60")])


def test_one_error_names_every_point_once_with_its_tasks(root: Path) -> None:
    seeds = [_config("finetune", root, "point=big", f"run_dir=/runs/finetune/big-s{s}", f"seed={s}",
                     "train.batch_size=32") for s in range(3)]
    points = [_config("pretrain", root, f"point=q{i}", f"run_dir=/runs/pretrain/q{i}", "train.batch_size=512")
              for i in range(22)]
    msg = _refused([*seeds, *points, _config("pretrain", root, "point=fits")])
    assert msg.startswith("25 task(s) would stop on their nodes")
    assert "finetune, point 'big' (3 tasks, e.g. run big-s0): train.batch_size=32 exceeds the 20" in msg
    assert msg.count("\n  - ") == 20 and msg.endswith("... and 3 more") and "'fits'" not in msg


def test_a_root_without_its_split_index_is_refused_with_the_command_to_run(root: Path) -> None:
    (root / "train" / "split_index.bin").unlink()
    with pytest.raises(DataError, match=rf"no split index.*simclr-shards --reindex {root}"):
        check_data([_config("pretrain", root)])

"""simclr/data/loading/loader.py: equal batches per rank, worker-independent order, exact resume, bad samples."""

import gc
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from simclr.data.errors import BadSampleError, DataError
from simclr.data.loading.loader import ShardLoader
from simclr.data.shards.index import read_index
from simclr.data.shards.shardset import ShardSet, open_split
from simclr.data.shards.sources import array_samples
from simclr.data.shards.write import write_shards


def _all(loader: ShardLoader, epoch: int, start: int = 0) -> list[dict]:
    return list(loader.epoch_iter(epoch, start))


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["key"] == y["key"]
        assert set(x) == set(y)
        for k, v in x.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, y[k]), k


@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
def test_every_rank_gets_equal_batches_and_eval_sees_every_sample_once(uneven_root: Path, world: int) -> None:
    loaders = [ShardLoader(uneven_root, "train", batch_size=8, mode="eval", size=8, rank=r, world_size=world)
               for r in range(world)]
    assert len({len(ld) for ld in loaders}) == 1
    keys = []
    for ld in loaders:
        batches = _all(ld, epoch=1)
        assert len(batches) == len(ld)
        assert all(b["image"].shape == (8, 3, 8, 8) for b in batches)
        for b in batches:
            keys += [k for k, v in zip(b["key"], b["valid"]) if v]
            assert (b["label"][~b["valid"]] == -1).all()
    assert sorted(keys) == sorted(loaders[0].keys) and len(keys) == 203
    train = [ShardLoader(uneven_root, "train", batch_size=8, size=8, rank=r, world_size=world) for r in range(world)]
    assert {len(ld) for ld in train} == {203 // (8 * world)}


def test_more_ranks_times_workers_than_shards(uneven_root: Path) -> None:
    # 5 ranks x 2 workers = 10 readers for 5 shards (one of 3 samples): still equal, full batches.
    lens, keys = [], set()
    for r in range(5):
        ld = ShardLoader(uneven_root, "train", batch_size=4, mode="labelled", size=8, rank=r, world_size=5,
                         num_workers=2)
        batches = _all(ld, epoch=0)
        lens.append(len(batches))
        assert all(len(b["key"]) == 4 for b in batches)
        keys |= {k for b in batches for k in b["key"]}
    assert lens == [10] * 5 and len(keys) == 200  # 203 // 20 * 20, no sample twice


@pytest.mark.parametrize("batched", [False, True])
def test_order_and_views_do_not_depend_on_the_worker_count(uneven_root: Path, batched: bool) -> None:
    kw = dict(batch_size=16, size=16, seed=3, batched_augment=batched)
    a = _all(ShardLoader(uneven_root, "train", num_workers=0, **kw), epoch=2)
    b = _all(ShardLoader(uneven_root, "train", num_workers=2, **kw), epoch=2)
    _same(a, b)
    assert a[0]["view1"].shape == (16, 3, 16, 16) and a[0]["label"].dtype == torch.int64
    assert not torch.equal(a[0]["view1"], a[0]["view2"])


def test_exact_resume_without_decoding_the_skipped_samples(uneven_root: Path, monkeypatch) -> None:
    ld = ShardLoader(uneven_root, "train", batch_size=10, size=12, seed=1)
    full = {e: _all(ld, e) for e in (0, 1, 2)}
    assert len(ld) == 20
    reads = []
    real_read = ShardSet.read
    monkeypatch.setattr(ShardSet, "read", lambda self, i: reads.append(i) or real_read(self, i))
    for epoch, step in [(0, 0), (0, 7), (1, 19), (2, 13), (1, 20)]:
        reads.clear()
        resumed = _all(ShardLoader(uneven_root, "train", batch_size=10, size=12, seed=1), epoch, step)
        _same(resumed, full[epoch][step:])
        assert len(reads) == (20 - step) * 10  # nothing before `step` was read
    assert not any(torch.equal(full[0][0]["view1"], full[1][i]["view1"]) for i in range(20))


def test_a_key_gets_the_same_views_whatever_batch_or_rank_it_lands_in(uneven_root: Path) -> None:
    def views(**kw):
        out = {}
        for r in range(kw.get("world_size", 1)):
            for b in ShardLoader(uneven_root, "train", size=12, seed=5, rank=r, **kw).epoch_iter(4):
                out.update({k: (v1, v2) for k, v1, v2 in zip(b["key"], b["view1"], b["view2"])})
        return out

    a = views(batch_size=8)
    b = views(batch_size=5, world_size=3, num_workers=1)
    common = set(a) & set(b)
    assert len(common) > 150
    for k in common:
        assert torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][1], b[k][1])


def test_device_augmentation_gives_the_worker_results(uneven_root: Path) -> None:
    kw = dict(batch_size=16, size=16, seed=3, batched_augment=True)
    a = _all(ShardLoader(uneven_root, "train", **kw), epoch=0)
    b = _all(ShardLoader(uneven_root, "train", augment_device="cpu", num_workers=1, **kw), epoch=0)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["key"] == y["key"]
        torch.testing.assert_close(x["view1"], y["view1"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("batched", [False, True])
def test_labelled_batches_can_carry_the_clean_image(uneven_root: Path, batched: bool) -> None:
    kw = dict(batch_size=16, size=32, seed=3, mode="labelled", batched_augment=batched, drop_last=True)  # upsampling: PIL and
    # grid_sample agree (downsampling, PIL antialiases and the batched path does not, as the official resize)
    with_clean = _all(ShardLoader(uneven_root, "train", with_clean=True, num_workers=2, **kw), epoch=1)
    plain = _all(ShardLoader(uneven_root, "train", **kw), epoch=1)
    evals = _all(ShardLoader(uneven_root, "train", **{**kw, "mode": "eval"}), epoch=1)
    for c, p, e in zip(with_clean, plain, evals):
        assert c["key"] == p["key"] == e["key"]
        assert torch.equal(c["image"], p["image"]) and "clean" not in p  # the augmented view is unchanged
        # the clean image is the evaluation transform's (PIL and tensor resizes agree within rounding)
        assert c["clean"].shape == c["image"].shape
        assert torch.allclose(c["clean"], e["image"], atol=0 if not batched else 2 / 255), (c["clean"] - e["image"]).abs().max()
        assert not torch.equal(c["clean"], c["image"])
    with pytest.raises(ValueError, match="with_clean"):
        ShardLoader(uneven_root, "train", batch_size=4, with_clean=True)


def test_keys_file_restricts_to_a_fraction(uneven_root: Path, tmp_path: Path) -> None:
    keys = [f"tr_{i:06d}" for i in range(0, 203, 7)]
    f = tmp_path / "some.txt"
    f.write_text("\n".join(keys) + "\n")
    ld = ShardLoader(uneven_root, "train", batch_size=4, mode="labelled", size=8, keys_file=f)
    assert ld.num_samples == len(keys) == 29 and len(ld) == 7
    seen = {k for b in ld.epoch_iter(0) for k in b["key"]}
    assert seen <= set(keys) and len(seen) == 28
    f.write_text("tr_000001\nnot_there\n")
    with pytest.raises(DataError, match="not in split") as exc:
        ShardLoader(uneven_root, "train", batch_size=1, keys_file=f)
    assert "not_there" in str(exc.value) and "some.txt" in str(exc.value)


def test_unlabelled_samples_read_as_minus_one_and_metadata(tmp_path: Path, rgb_images) -> None:
    write_shards(array_samples(rgb_images(12, 20, 20)), tmp_path, split="u", class_names=["a", "b"])
    ld = ShardLoader(tmp_path, "u", batch_size=4, size=16)
    b = next(ld.epoch_iter(0))
    assert (b["label"] == -1).all() and ld.num_classes == 2 and ld.class_names == ["a", "b"] and ld.num_samples == 12


def test_bad_arguments_name_the_argument(uneven_root: Path) -> None:
    with pytest.raises(ValueError, match="rank"):
        ShardLoader(uneven_root, "train", batch_size=4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="mode"):
        ShardLoader(uneven_root, "train", batch_size=4, mode="views")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no batch per epoch"):
        ShardLoader(uneven_root, "train", batch_size=64, world_size=4)
    ld = ShardLoader(uneven_root, "train", batch_size=4)
    with pytest.raises(ValueError, match="start_step"):
        next(ld.epoch_iter(0, start_step=len(ld) + 1))


@pytest.fixture
def corrupt_root(tmp_path: Path, fmnist_small) -> Path:
    """40 samples; the images of keys c_000013 and c_000027 have garbage in their pixel data."""
    images, labels = fmnist_small
    write_shards(array_samples(images[:40], labels[:40], [str(i) for i in range(10)], key_prefix="c"), tmp_path,
                 split="train", max_count=16)
    for i in (13, 27):
        shard = tmp_path / "train" / f"shard-00000{i // 16}.tar"
        idx = read_index(shard.with_suffix(".idx"))
        j = i % 16
        data = bytearray(shard.read_bytes())
        start = int(idx.offsets[j])
        data[start + 20 : start + int(idx.sizes[j]) - 12] = b"\x00" * (int(idx.sizes[j]) - 32)
        shard.write_bytes(bytes(data))
    return tmp_path


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_is_an_error_naming_shard_and_key(corrupt_root: Path, workers: int) -> None:
    ld = ShardLoader(corrupt_root, "train", batch_size=8, size=8, verify="size", num_workers=workers)
    with pytest.raises(BadSampleError) as exc:
        _all(ld, 0)
    assert "c_000013" in str(exc.value) or "c_000027" in str(exc.value)
    assert "shard-00000" in str(exc.value)


def test_bad_samples_within_budget_are_replaced_logged_and_counted(corrupt_root: Path, caplog) -> None:
    ld = ShardLoader(corrupt_root, "train", batch_size=8, size=8, verify="size", bad_sample_budget=2)
    with caplog.at_level(logging.WARNING, logger="simclr.data"):
        batches = _all(ld, 0)
    assert len(batches) == 5 and all(b["view1"].shape[0] == 8 for b in batches)
    assert ld.bad_samples == 2
    assert "c_000013" in caplog.text and "c_000027" in caplog.text
    keys = [k for b in batches for k in b["key"]]
    assert "c_000013" not in keys and "c_000027" not in keys
    again = _all(ShardLoader(corrupt_root, "train", batch_size=8, size=8, verify="size", bad_sample_budget=2), 0)
    _same(batches, again)  # the substitutes are deterministic too
    with pytest.raises(BadSampleError, match="exceed bad_sample_budget=1"):
        _all(ShardLoader(corrupt_root, "train", batch_size=8, size=8, verify="size", bad_sample_budget=1), 0)


def test_eval_counts_every_readable_sample_once_with_a_budget(corrupt_root: Path) -> None:
    """A bad image's substitute kept valid=True in eval mode: an evaluation counted that sample twice."""
    for world in (1, 3):
        keys: list[str] = []
        for r in range(world):
            ld = ShardLoader(corrupt_root, "train", batch_size=8, mode="eval", size=8, verify="size",
                             bad_sample_budget=2, rank=r, world_size=world)
            for b in _all(ld, 0):
                assert b["image"].shape[0] == 8  # shapes stay equal across ranks
                assert (b["label"][~b["valid"]] == -1).all() and (b["label"][b["valid"]] >= 0).all()
                keys += [k for k, v in zip(b["key"], b["valid"]) if v]
        readable = sorted(set(ld.keys) - {"c_000013", "c_000027"})
        assert sorted(keys) == readable  # each once, the bad ones not at all


def test_labelled_only_keeps_the_labelled_samples(tmp_path: Path, rgb_images, monkeypatch) -> None:
    labels = np.where(np.arange(20) % 2 == 0, np.arange(20) % 3, -1)
    write_shards(array_samples(rgb_images(20, 12, 12), labels, ["a", "b", "c"], key_prefix="m"), tmp_path,
                 split="mix", max_count=8)
    reads: list[int] = []
    real_read = ShardSet.read
    monkeypatch.setattr(ShardSet, "read", lambda self, i: reads.append(i) or real_read(self, i))
    ld = ShardLoader(tmp_path, "mix", batch_size=4, mode="labelled", size=8, labelled_only=True)
    assert reads == []  # chosen from the shard index: nothing read or decoded
    assert ld.num_samples == 10 and ld.keys == [f"m_{i:06d}" for i in range(0, 20, 2)]
    assert all(bool((b["label"] >= 0).all()) for b in ld.epoch_iter(0))
    assert ShardLoader(tmp_path, "mix", batch_size=4, size=8).num_samples == 20  # the default keeps them all
    write_shards(array_samples(rgb_images(6, 12, 12)), tmp_path, split="u", class_names=["a", "b"])
    with pytest.raises(DataError, match="no labelled samples"):
        ShardLoader(tmp_path, "u", batch_size=2, labelled_only=True)


def _child_growth(walk: Callable[[], object]) -> int:
    """Private memory (bytes) a forked child gains by running ``walk``, as a DataLoader worker would."""
    from benchmarks.data_scale import _uss

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, walk, measure, report, exit without cleanup
        os.close(r)
        before = _uss(os.getpid())
        walk()
        os.write(w, str(_uss(os.getpid()) - before).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return int(out)


@pytest.mark.slow
def test_a_forked_worker_shares_the_index_of_a_large_split(tmp_path: Path) -> None:
    """300k samples: a worker that touches every key, label and offset gains no private memory (the split index
    is one shared read-only map); the same walk over the keys held as Python strings copies them all."""
    from benchmarks.data_scale import simulate

    simulate(tmp_path, shards=300, per_shard=1000)
    s = open_split(tmp_path, "train", verify="size")
    gc.collect()

    def walk_columns() -> None:
        total = 0
        for k in s.keys:
            total += len(k)
        total += int(s.labels.sum() + s.offsets.sum() + s.sizes.sum() + s.shard_ids.sum())

    as_strings = list(s.keys)

    def walk_strings() -> None:
        for k in as_strings:
            len(k)

    assert _child_growth(walk_columns) < 4 << 20
    assert _child_growth(walk_strings) > 12 << 20  # the copy-on-read the split index avoids: the test can fail

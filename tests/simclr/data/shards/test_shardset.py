"""simclr/data/shards/shardset.py: every bad-data case of issue 4 names the shard (and the sample key)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from simclr.data.errors import BadSampleError, DataError, ManifestError
from simclr.data.shards.columns import SplitIndexError, read_split_index, reindex
from simclr.data.shards.index import read_index
from simclr.data.shards.keys import key_hashes
from simclr.data.shards.shardset import check_present, open_split
from simclr.data.shards.sources import array_samples
from simclr.data.shards.manifest import file_sha256
from simclr.data.shards.write import write_shards


@pytest.fixture
def root(tmp_path: Path, fmnist_small) -> Path:
    images, labels = fmnist_small
    write_shards(array_samples(images[:50], labels[:50], [str(i) for i in range(10)], key_prefix="k"), tmp_path,
                 split="train", max_count=20)
    return tmp_path


def _edit_manifest(root: Path, fn) -> None:
    path = root / "train" / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def test_a_good_split_opens_with_every_sample(root: Path) -> None:
    s = open_split(root, "train", verify="sha256")
    assert len(s) == 50 and s.keys[0] == "k_000000" and s.dropped == []
    assert s.read(0)[:4] == b"\x89PNG"
    assert s.shard_path(45).name == "shard-000002.tar"


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest"):
        open_split(tmp_path, "train")


def test_corrupt_shard_fails_the_sha256_check(root: Path) -> None:
    tar = root / "train" / "shard-000001.tar"
    idx = read_index(root / "train" / "shard-000001.idx")
    data = bytearray(tar.read_bytes())
    data[idx.offsets[3] + 30] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256") as exc:
        open_split(root, "train", verify="sha256")
    assert "shard-000001.tar" in str(exc.value)
    assert len(open_split(root, "train", verify="size")) == 50  # size-only check: the loader meets it on decode


def test_truncated_shard_names_the_first_lost_key_or_drops_within_budget(root: Path) -> None:
    tar = root / "train" / "shard-000001.tar"
    idx = read_index(root / "train" / "shard-000001.idx")
    cut = int(idx.offsets[12])  # samples 12.. of this shard (k_000032 ..) are lost
    tar.write_bytes(tar.read_bytes()[:cut])
    with pytest.raises(DataError, match="truncated") as exc:
        open_split(root, "train")
    assert "shard-000001.tar" in str(exc.value) and "k_000032" in str(exc.value)
    s = open_split(root, "train", bad_sample_budget=8)
    assert len(s) == 42 and [d.key for d in s.dropped] == [f"k_{i:06d}" for i in range(32, 40)]
    with pytest.raises(DataError, match="truncated"):
        open_split(root, "train", bad_sample_budget=7)


def test_missing_and_empty_shards(root: Path) -> None:
    (root / "train" / "shard-000002.tar").unlink()
    with pytest.raises(DataError, match="missing shard") as exc:
        open_split(root, "train")
    assert "shard-000002.tar" in str(exc.value) and "k_000040" in str(exc.value)
    assert len(open_split(root, "train", bad_sample_budget=10)) == 40
    (root / "train" / "shard-000001.tar").write_bytes(b"")
    with pytest.raises(DataError, match="empty shard file") as exc:
        open_split(root, "train", bad_sample_budget=10)
    assert "shard-000001.tar" in str(exc.value)


def test_manifest_that_disagrees_with_the_files(root: Path) -> None:
    def more(m):
        m["shards"][0]["count"] += 1
        m["num_samples"] += 1
        m["num_unlabelled"] += 1
    _edit_manifest(root, more)
    with pytest.raises(SplitIndexError, match=r"stale split index.*simclr-shards --reindex") as exc:
        open_split(root, "train")
    assert "split_index.bin" in str(exc.value)
    reindex(root)  # as the message says: now the count itself disagrees
    with pytest.raises(ManifestError, match="index lists 20 samples, manifest says 21") as exc:
        open_split(root, "train")
    assert "shard-000000.idx" in str(exc.value)


def test_manifest_sum_and_sha_disagreements(root: Path) -> None:
    _edit_manifest(root, lambda m: m.update(num_samples=49))
    with pytest.raises(ManifestError, match="num_samples"):
        open_split(root, "train")
    _edit_manifest(root, lambda m: m.update(num_samples=50))
    _edit_manifest(root, lambda m: m["shards"][2].update(sha256="0" * 64))
    with pytest.raises(DataError, match="sha256") as exc:
        open_split(root, "train", verify="sha256")
    assert "shard-000002.tar" in str(exc.value)


def test_edited_index_is_detected(root: Path) -> None:
    p = root / "train" / "shard-000000.idx"
    p.write_text(p.read_text().replace("k_000005", "k_000006", 1))
    with pytest.raises(ManifestError, match="index size/sha256") as exc:
        open_split(root, "train")
    assert "shard-000000.idx" in str(exc.value)


def test_duplicate_keys_across_shards(root: Path) -> None:
    d = root / "train"
    shutil.copy(d / "shard-000000.tar", d / "shard-000002.tar")
    shutil.copy(d / "shard-000000.idx", d / "shard-000002.idx")

    def dup(m):  # shard 2 (10 samples) becomes a copy of shard 0 (20 samples, the same keys)
        m["shards"][2] = {**m["shards"][0], "name": "shard-000002.tar", "index": "shard-000002.idx"}
        m["num_samples"] = 60
        labels = np.concatenate([read_index(d / f"shard-00000{i}.idx").labels for i in range(3)])
        m["label_counts"] = [int(c) for c in np.bincount(labels, minlength=10)]

    _edit_manifest(root, dup)
    reindex(root)
    with pytest.raises(BadSampleError, match="duplicate key") as exc:
        open_split(root, "train")
    assert "shard-000002.tar" in str(exc.value) and "k_000000" in str(exc.value)
    assert len(open_split(root, "train", bad_sample_budget=20)) == 40


def test_label_outside_the_class_list(root: Path) -> None:
    labels = np.concatenate([read_index(root / "train" / f"shard-00000{i}.idx").labels for i in range(3)])
    bad = int(np.nonzero(labels >= 5)[0][0])

    def fewer(m):
        m["class_names"] = m["class_names"][:5]
        m["label_counts"] = m["label_counts"][:5]
        m["num_unlabelled"] = int((labels >= 5).sum())
    _edit_manifest(root, fewer)
    with pytest.raises(BadSampleError, match="outside the 5 classes") as exc:
        open_split(root, "train")
    assert f"k_{bad:06d}" in str(exc.value) and "shard-00000" in str(exc.value)
    s = open_split(root, "train", bad_sample_budget=50)
    assert len(s) == int((labels < 5).sum()) and all(d.reason == "bad label" for d in s.dropped)


def test_short_read_after_open_is_a_bad_sample_not_a_crash(root: Path) -> None:
    s = open_split(root, "train", verify="size")
    tar = root / "train" / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes()[:2048])
    with pytest.raises(BadSampleError, match="short read") as exc:
        s.read(10)
    assert "k_000010" in str(exc.value) and file_sha256(tar)


def test_the_split_index_equals_the_per_shard_indexes_for_every_sample(root: Path) -> None:
    s = open_split(root, "train")
    parts = [read_index(root / "train" / f"shard-00000{i}.idx") for i in range(3)]
    assert list(s.keys) == [k for p in parts for k in p.keys]
    assert s.labels.tolist() == [int(v) for p in parts for v in p.labels]
    assert s.offsets.tolist() == [int(v) for p in parts for v in p.offsets]
    assert s.sizes.tolist() == [int(v) for p in parts for v in p.sizes]
    assert s.shard_ids.tolist() == [i for i, p in enumerate(parts) for _ in p.keys]
    assert s.key_ids.tolist() == key_hashes(list(s.keys)).tolist()
    si = read_split_index(root / "train", open_split(root, "train").manifest.shards, None)
    assert si.height.tolist() == [int(v) for p in parts for v in p.heights]
    assert si.width.tolist() == [int(v) for p in parts for v in p.widths]
    assert [("L", "RGB")[m] for m in si.mode] == [m for p in parts for m in p.modes]


def test_a_root_without_a_split_index_is_refused_until_reindexed(root: Path) -> None:
    d = root / "train"
    (d / "split_index.bin").unlink()
    _edit_manifest(root, lambda m: m.pop("split_index"))  # as the code before split indexes wrote it
    with pytest.raises(SplitIndexError, match=rf"no split index.*simclr-shards --reindex {re.escape(str(root))} "):
        open_split(root, "train")
    before = {p.name: p.read_bytes() for p in d.glob("shard-*")}
    assert set(reindex(root)) == {"train"}
    assert {p.name: p.read_bytes() for p in d.glob("shard-*")} == before  # nothing re-sharded
    assert len(open_split(root, "train", verify="sha256")) == 50


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other-shards"])
def test_a_damaged_or_stale_split_index_is_refused(root: Path, damage: str) -> None:
    p = root / "train" / "split_index.bin"
    data = p.read_bytes()
    if damage == "truncated":
        p.write_bytes(data[:100])
    elif damage == "garbage":
        p.write_bytes(b"\x00" * len(data))
    else:  # the shards rewritten (another shard size): an index built for the old ones
        write_shards(array_samples(np.zeros((50, 4, 4), np.uint8), np.arange(50) % 10, [str(i) for i in range(10)],
                     key_prefix="k"), root, split="train", max_count=25)
        keep = (root / "train" / "manifest.json").read_text()
        p.write_bytes(data)
        (root / "train" / "manifest.json").write_text(json.dumps({**json.loads(keep), "split_index": None}))
    with pytest.raises(SplitIndexError, match="simclr-shards --reindex") as exc:
        open_split(root, "train")
    assert "split_index.bin" in str(exc.value)


def test_check_present_with_a_budget_refuses_what_open_split_would(root: Path) -> None:
    (root / "train" / "shard-000002.tar").unlink()  # 10 samples
    with pytest.raises(DataError, match="missing shard"):
        check_present(root, "train", bad_sample_budget=9)
    check_present(root, "train", bad_sample_budget=10)
    tar = root / "train" / "shard-000001.tar"
    cut = int(read_index(root / "train" / "shard-000001.idx").offsets[12])  # 8 samples lost
    tar.write_bytes(tar.read_bytes()[:cut])
    with pytest.raises(DataError, match="missing shard"):  # 8 lost to the cut, then 10 more: 18 > 17
        check_present(root, "train", bad_sample_budget=17)
    check_present(root, "train", bad_sample_budget=18)
    assert len(open_split(root, "train", bad_sample_budget=18)) == 32
    tar.write_bytes(tar.read_bytes() + b"\0" * 100000)  # larger than recorded: never a budget matter
    with pytest.raises(DataError, match="manifest says"):
        check_present(root, "train", bad_sample_budget=1000)

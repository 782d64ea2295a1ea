"""simclr/data/shards/write.py: round trip, byte reproducibility, shard limits, array-job split, bad input."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr.data.errors import BadSampleError
from simclr.data.shards.manifest import Manifest
from simclr.data.shards.sources import array_samples
from simclr.data.shards.write import finalize_split, write_shards

CLASSES = [str(i) for i in range(10)]


def _tree_digest(split_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(split_dir.iterdir()) if p.is_file()}


def test_round_trip_through_a_plain_tar_reader(tmp_path: Path, fmnist_small) -> None:
    images, labels = fmnist_small
    src = array_samples(images[:120], labels[:120], CLASSES, key_prefix="s")
    m = write_shards(src, tmp_path, split="train", max_count=50)
    assert m is not None and m.num_samples == 120 and [s.count for s in m.shards] == [50, 50, 20]
    assert m.image_format == "png" and m.image_mode == "L" and m.image_size == [28, 28]
    assert sum(m.label_counts) == 120 and m.class_names == CLASSES
    got: dict[str, dict[str, bytes]] = {}
    for s in m.shards:
        with tarfile.open(tmp_path / "train" / s.name) as tar:  # an independent reader: python's tarfile
            for member in tar:
                key, ext = member.name.split(".", 1)
                got.setdefault(key, {})[ext] = tar.extractfile(member).read()
                assert member.mtime == 0 and member.uid == 0 and member.uname == ""
    assert len(got) == 120
    for i, (key, image, label) in enumerate(src):
        decoded = np.asarray(Image.open(io.BytesIO(got[key]["png"])))
        np.testing.assert_array_equal(decoded, image)
        assert int(got[key]["cls"]) == label


def test_webdataset_reads_the_shards(tmp_path: Path, fmnist_small) -> None:
    wds = pytest.importorskip("webdataset")
    images, labels = fmnist_small
    write_shards(array_samples(images[:30], labels[:30], CLASSES), tmp_path, split="train", max_count=16)
    urls = [str(p) for p in sorted((tmp_path / "train").glob("*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False, nodesplitter=None).decode("l8").to_tuple("png", "cls"))
    assert len(samples) == 30
    np.testing.assert_array_equal(samples[3][0], images[3])
    assert samples[3][1] == labels[3]


def test_same_input_gives_the_same_bytes(tmp_path: Path, fmnist_small) -> None:
    images, labels = fmnist_small
    for d in ("a", "b"):
        write_shards(array_samples(images[:60], labels[:60], CLASSES), tmp_path / d, split="train", max_count=25)
    a, b = _tree_digest(tmp_path / "a" / "train"), _tree_digest(tmp_path / "b" / "train")
    assert a == b and len(a) == 3 + 3 + 1 + 1  # tars, indexes, split index, manifest


def test_jpeg_rgb_and_byte_limit(tmp_path: Path, rgb_images) -> None:
    imgs = rgb_images(20, 32, 48, seed=1)
    m = write_shards(array_samples(imgs, np.arange(20) % 2, ["x", "y"]), tmp_path, split="val", image_format="jpeg",
                     max_bytes=12 * 1024)
    assert m is not None and len(m.shards) > 1 and all(s.bytes <= 12 * 1024 for s in m.shards)
    assert m.image_mode == "RGB" and m.image_size == [32, 48] and m.image_format == "jpeg"
    with tarfile.open(tmp_path / "val" / m.shards[0].name) as tar:
        names = tar.getnames()
    assert names[0].endswith(".jpg") and names[1].endswith(".cls")


def test_encoded_bytes_in_the_target_format_pass_unchanged(tmp_path: Path, rgb_images) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb_images(1, 10, 12)[0]).save(buf, format="PNG", compress_level=1)
    original = buf.getvalue()
    m = write_shards([("only", original, None)], tmp_path, split="x", class_names=["a"])
    with tarfile.open(tmp_path / "x" / m.shards[0].name) as tar:
        assert tar.getnames() == ["only.png"]  # unlabelled: no .cls member
        assert tar.extractfile("only.png").read() == original
    assert m.num_unlabelled == 1


def test_array_job_split_gives_the_single_task_bytes(tmp_path: Path, fmnist_small) -> None:
    images, labels = fmnist_small
    src = array_samples(images[:70], labels[:70], CLASSES)
    single = write_shards(src, tmp_path / "one", split="train", max_count=20)
    results = [write_shards(src, tmp_path / "arr", split="train", max_count=20, task_index=i, num_tasks=3)
               for i in (2, 0, 1)]
    assert results[0] is None and results[1] is None  # only the task completing the set writes the manifest
    assert results[2] is not None and results[2].to_json() == single.to_json()
    one = _tree_digest(tmp_path / "one" / "train")
    arr = _tree_digest(tmp_path / "arr" / "train")
    assert one == arr
    assert finalize_split(tmp_path / "arr", "train").to_json() == single.to_json()  # idempotent


def test_rewriting_replaces_old_shards(tmp_path: Path, fmnist_small) -> None:
    images, labels = fmnist_small
    write_shards(array_samples(images[:90], labels[:90], CLASSES), tmp_path, split="train", max_count=20)
    m = write_shards(array_samples(images[:30], labels[:30], CLASSES), tmp_path, split="train", max_count=20)
    assert sorted(p.name for p in (tmp_path / "train").glob("shard-*")) == [
        "shard-000000.idx", "shard-000000.tar", "shard-000001.idx", "shard-000001.tar"]
    assert Manifest.load(tmp_path / "train").num_samples == m.num_samples == 30


@pytest.mark.parametrize(
    "samples,match",
    [
        ([("a", np.zeros((4, 4), np.uint8), 0), ("a", np.zeros((4, 4), np.uint8), 1)], "duplicate key"),
        ([("a.b", np.zeros((4, 4), np.uint8), 0)], "'.'"),
        ([("a", np.zeros((4, 4), np.uint8), 2)], "label 2 outside"),
        ([("a", b"\x89PNG\r\n\x1a\nbroken", 0)], "cannot read"),
        ([("a", b"not an image at all", 0)], "cannot read"),
    ],
)
def test_bad_input_names_the_shard_and_key(tmp_path: Path, samples, match: str) -> None:
    with pytest.raises(BadSampleError, match=match) as exc:
        write_shards(samples, tmp_path, split="train", class_names=["p", "q"])
    assert "shard-000000.tar" in str(exc.value) and "'a" in str(exc.value)
    assert not (tmp_path / "train" / "manifest.json").exists()
    assert not list((tmp_path / "train").glob(".shard-*"))  # no temporary left behind


def test_bad_arguments(tmp_path: Path) -> None:
    one = [("a", np.zeros((4, 4), np.uint8), 0)]
    with pytest.raises(ValueError, match="image_format"):
        write_shards(one, tmp_path, split="t", class_names=["a"], image_format="gif")
    with pytest.raises(ValueError, match="class_names"):
        write_shards(one, tmp_path, split="t")
    with pytest.raises(ValueError, match="max_bytes"):
        write_shards(array_samples(np.zeros((3, 4, 4), np.uint8)), tmp_path, split="t", num_tasks=2, max_bytes=10**6)
    with pytest.raises(ValueError, match="task_index"):
        write_shards(one, tmp_path, split="t", class_names=["a"], task_index=2, num_tasks=2)
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text()) if (tmp_path / "t" / "manifest.json").exists() else None
    assert manifest is None

"""jobs/cli/shards.py: the shard stage CLI and build_dataset (reuse, rewrite, array tasks, progress, errors)."""

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.cli.shards import build_dataset, main
from simclr.data.shards.manifest import Manifest
from simclr.data.shards.sources.fashion_mnist import DEFAULT_ROOT

HAVE_FMNIST = (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file()


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "arrays.npz"
    np.savez(path, train_images=rng.integers(0, 255, (90, 12, 12), dtype=np.uint8), train_labels=np.arange(90) % 3,
             test_images=rng.integers(0, 255, (20, 12, 12), dtype=np.uint8), test_labels=np.arange(20) % 3,
             class_names=np.array(["a", "b", "c"]))
    return path


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.tar")}


def test_cli_writes_splits_and_fractions_then_reuses(npz: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "root"
    argv = ["--source", "arrays", "--input", str(npz), "--out", str(out), "--shard-size", "40",
            "--fractions", "0.1", "0.5", "--quiet"]
    assert main(argv) == 0
    assert "train: 90 samples, 3 shards" in capsys.readouterr().out
    m = Manifest.load(out / "train")
    assert m.class_names == ["a", "b", "c"] and m.source["type"] == "arrays"
    assert Manifest.load(out / "test").num_samples == 20
    assert len((out / "train" / "fractions" / "10percent.txt").read_text().split()) == 9
    before = _mtimes(out)
    assert main(argv) == 0  # same request: reused, nothing rewritten
    assert _mtimes(out) == before
    assert main(argv[:-1] + ["--shard-size", "50", "--quiet"]) == 0  # another request: rewritten
    assert [s.count for s in Manifest.load(out / "train").shards] == [50, 40]


def test_a_corrupt_root_is_rewritten_not_reused(npz: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "root"
    build_dataset("arrays", npz, out, splits=["train"], shard_size=40, fractions=())
    tar = out / "train" / "shard-000001.tar"
    data = bytearray(tar.read_bytes())
    data[1000] ^= 1
    tar.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        m = build_dataset("arrays", npz, out, splits=["train"], shard_size=40, fractions=())
    assert "fail the check" in caplog.text and "shard-000001.tar" in caplog.text
    assert m["train"] is not None and tar.read_bytes() != bytes(data)


def test_array_tasks_share_the_work(npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "root"
    first = build_dataset("arrays", npz, out, splits=["train"], shard_size=20, num_tasks=2, task_index=1)
    assert first["train"] is None and not (out / "train" / "manifest.json").exists()
    second = build_dataset("arrays", npz, out, splits=["train"], shard_size=20, num_tasks=2, task_index=0)
    assert second["train"] is not None and second["train"].num_samples == 90 and len(second["train"].shards) == 5
    assert (out / "train" / "fractions" / "1percent.txt").is_file()


def test_imagefolder_jpeg_passthrough(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for split, n in (("train", 6), ("val", 3)):
        for cls in ("cat", "dog"):
            d = tmp_path / "in" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(d / f"img.{i}.JPEG", quality=80)
    out = tmp_path / "root"
    res = build_dataset("imagefolder", tmp_path / "in", out, splits=["train", "val"], fractions=(0.5,))
    m = res["train"]
    assert m.image_format == "jpeg" and m.class_names == ["cat", "dog"] and m.label_counts == [6, 6]
    keys = (out / "train" / "fractions" / "50percent.txt").read_text().split()
    assert len(keys) == 6 and all(k.startswith(("cat/img_", "dog/img_")) for k in keys)
    assert res["val"].num_samples == 6


def test_errors_are_reported_not_raised(tmp_path: Path, capsys, caplog) -> None:
    assert main(["--source", "imagefolder", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope" in caplog.text
    with pytest.raises(SystemExit):
        main(["--source", "mnist", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="Fashion-MNIST has splits"):
        build_dataset("fashion_mnist", None, tmp_path, splits=["val"])


@pytest.mark.skipif(not HAVE_FMNIST, reason="needs the dataset-fashion-mnist Debian package")
def test_fashion_mnist_subset_with_progress_lines(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        res = build_dataset("fashion_mnist", None, tmp_path, limit=300, shard_size=128, fractions=(0.1,), progress=True)
    m = res["train"]
    assert m.num_samples == 300 and m.image_mode == "L" and m.image_size == [28, 28] and m.source["limit"] == 300
    assert "shards train" in caplog.text  # plain progress lines, not a terminal bar
    assert len((tmp_path / "train" / "fractions" / "10percent.txt").read_text().split()) == 30


def test_every_imagefolder_split_numbers_classes_as_the_train_split(tmp_path: Path) -> None:
    """train/{cat,dog,zebra} with test/{cat,zebra}: test's zebra was label 1 ("dog" in train) with no error."""
    rng = np.random.default_rng(2)
    for split, classes in (("train", ("cat", "dog", "zebra")), ("test", ("cat", "zebra"))):
        for cls in classes:
            d = tmp_path / "in" / split / cls
            d.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / "0.png")
    res = build_dataset("imagefolder", tmp_path / "in", tmp_path / "root", splits=["test", "train"], fractions=())
    assert res["test"].class_names == res["train"].class_names == ["cat", "dog", "zebra"]
    assert res["test"].label_counts == [1, 0, 1]


def test_an_edited_image_of_the_same_size_is_not_reused(tmp_path: Path) -> None:
    """PPM files rewritten with other pixels keep their size: the rerun reused the stale shards."""
    import os

    from simclr.data.shards.shardset import open_split

    d = tmp_path / "in" / "train" / "c"
    d.mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 10, np.uint8)).save(d / "0.ppm")
    build_dataset("imagefolder", tmp_path / "in", tmp_path / "root", splits=["train"], fractions=())
    Image.fromarray(np.full((8, 8, 3), 110, np.uint8)).save(d / "0.ppm")
    st = (d / "0.ppm").stat()
    os.utime(d / "0.ppm", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later edit, whatever the clock's grain
    build_dataset("imagefolder", tmp_path / "in", tmp_path / "root", splits=["train"], fractions=())
    from simclr.data.shards.codec import decode_pil

    assert np.asarray(decode_pil(open_split(tmp_path / "root", "train").read(0), "RGB")).mean() == 110


def test_a_limit_takes_samples_of_every_class(tmp_path: Path) -> None:
    """An ImageFolder is listed class by class: --limit 7 over cat/dog/zebra (5 images each) gave 5 cats + 2 dogs."""
    rng = np.random.default_rng(3)
    for cls in ("cat", "dog", "zebra"):
        d = tmp_path / "in" / "train" / cls
        d.mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")
    res = build_dataset("imagefolder", tmp_path / "in", tmp_path / "root", splits=["train"], limit=7, fractions=())
    m = res["train"]
    assert m.num_samples == 7 and m.label_counts == [3, 2, 2] and m.source["limit_rule"] == "class-balanced"
    # a larger limit than a class holds leaves its turns to the others
    res = build_dataset("imagefolder", tmp_path / "in", tmp_path / "root2", splits=["train"], limit=14, fractions=())
    assert res["train"].label_counts == [5, 5, 4]


def test_the_old_module_spelling_names_the_new_command() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "jobs.shards", "--help"], capture_output=True, text=True)
    assert out.returncode != 0 and "jobs.shards has moved: use simclr-shards (jobs.cli.shards)" in out.stderr
    with pytest.raises(ModuleNotFoundError, match="jobs.grid has moved: use jobs.sweep.expand"):
        import jobs.grid  # noqa: F401


def _wds_split(folder: Path, n: int, classes: int) -> Path:
    import io

    import webdataset as wds

    folder.mkdir(parents=True)
    with wds.ShardWriter(str(folder / "part-%06d.tar"), maxcount=20, verbose=0) as w:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (i, 0, 0)).save(buf, format="JPEG")
            w.write({"__key__": f"{folder.name}_{i:05d}", "jpg": buf.getvalue(), "cls": i % classes})
    return folder


def test_cli_indexes_webdataset_shards_in_place_imports_a_list_and_reuses(tmp_path: Path, capsys) -> None:
    train, test = _wds_split(tmp_path / "wds" / "train", 60, 3), _wds_split(tmp_path / "wds" / "test", 12, 2)
    (tmp_path / "1pct.txt").write_text("".join(f"train_{i:05d}.JPEG\n" for i in range(6)))
    out = tmp_path / "root"
    argv = ["--source", "webdataset", "--input", str(train / "part-{000000..000002}.tar"), "--out", str(out),
            "--split", "train", "--num-classes", "3", "--fraction-file", f"1percent={tmp_path / '1pct.txt'}",
            "--quiet"]
    assert main(argv) == 0
    assert "train: 60 samples, 3 shards" in capsys.readouterr().out
    assert sorted(p.name for p in train.iterdir()) == [f"part-{i:06d}.tar" for i in range(3)]  # nothing beside
    assert (out / "train" / "fractions" / "1percent.txt").read_text().split() == [f"train_{i:05d}" for i in range(6)]
    assert len((out / "train" / "fractions" / "10percent.txt").read_text().split()) == 6  # chosen: 2 per class
    idx = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.idx")}
    assert main(argv) == 0  # reused, not indexed again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.idx")} == idx
    # The test split (only 2 of the classes) is numbered by the train split's classes.
    assert main(["--source", "webdataset", "--input", str(test), "--out", str(out), "--split", "test", "--quiet"]) == 0
    assert Manifest.load(out / "test").class_names == ["0", "1", "2"]


def test_cli_refuses_a_damaged_tar_and_two_splits(tmp_path: Path, caplog) -> None:
    train = _wds_split(tmp_path / "wds" / "train", 30, 3)
    shard = train / "part-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    argv = ["--source", "webdataset", "--input", str(train), "--out", str(tmp_path / "root"), "--split", "train"]
    with caplog.at_level(logging.ERROR):
        assert main(argv) == 2
    assert "truncated tar" in caplog.text and "part-000001.tar" in caplog.text and "byte offset" in caplog.text
    assert not (tmp_path / "root" / "train" / "manifest.json").exists()
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main([*argv[:-2], "--splits", "train", "test"]) == 2
    assert "one split a call" in caplog.text
    assert main([*argv, "--skip-bad", "--quiet"]) == 0
    assert Manifest.load(tmp_path / "root" / "train").source["skipped"] >= 1


def test_reindex_and_reuse_give_an_old_root_its_split_index(npz: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "root"
    argv = ["--source", "arrays", "--input", str(npz), "--out", str(out), "--shard-size", "40", "--quiet"]
    assert main(argv) == 0

    def make_old() -> None:  # as the code before split indexes left a root
        for split in ("train", "test"):
            (out / split / "split_index.bin").unlink()
            m = Manifest.load(out / split)
            m.split_index = None
            m.save(out / split)

    make_old()
    tars = _mtimes(out)
    assert main(["--reindex", str(out)]) == 0
    assert "train: split index of 90 samples" in capsys.readouterr().out
    assert (out / "test" / "split_index.bin").is_file() and _mtimes(out) == tars
    make_old()
    assert main(argv) == 0  # reused: indexed, not rewritten
    assert _mtimes(out) == tars and Manifest.load(out / "train").split_index is not None
    assert main(["--reindex", str(tmp_path / "nothing")]) == 2

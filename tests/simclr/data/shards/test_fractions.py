import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from simclr.data.errors import DataError
from simclr.data.loading.loader import ShardLoader
from simclr.data.shards.fractions import (fraction_keys_file, fraction_name, import_key_list, match_keys, read_keys,
                                          write_label_fractions)
from simclr.data.shards.inplace import expand_inputs, index_webdataset
from simclr.data.shards.shardset import open_split
from simclr.data.shards.sources import array_samples, imagefolder_samples
from simclr.data.shards.write import write_shards


@pytest.fixture
def root(tmp_path: Path) -> Path:
    n = 400  # 40 per class, plus 20 unlabelled
    labels = np.concatenate([np.arange(n) % 10, np.full(20, -1)])
    write_shards(array_samples(np.zeros((n + 20, 4, 4), np.uint8), labels, [f"c{i}" for i in range(10)]), tmp_path,
                 split="train", max_count=64)
    return tmp_path


def _labels_of(root: Path, keys: list[str]) -> np.ndarray:
    s = open_split(root, "train")
    pos = {k: i for i, k in enumerate(s.keys)}
    return s.labels[[pos[k] for k in keys]]


def test_fractions_are_balanced_nested_and_written_as_key_lists(root: Path) -> None:
    paths = write_label_fractions(root, fractions=(0.05, 0.25), seed=0, per_class=3)
    assert set(paths) == {"5percent", "25percent", "3perclass"}
    assert paths["5percent"] == root / "train" / "fractions" / "5percent.txt"
    small, big, three = (read_keys(paths[k]) for k in ("5percent", "25percent", "3perclass"))
    assert np.bincount(_labels_of(root, small), minlength=10).tolist() == [2] * 10  # 0.05 * 400 / 10
    assert np.bincount(_labels_of(root, big), minlength=10).tolist() == [10] * 10
    assert set(small) <= set(three) <= set(big)  # nested
    assert small == sorted(small)


def test_seed_stable_and_seed_dependent(root: Path, tmp_path: Path) -> None:
    a = write_label_fractions(root, fractions=(0.1,), seed=7)["10percent"].read_text()
    b = write_label_fractions(root, fractions=(0.1,), seed=7)["10percent"].read_text()
    c = write_label_fractions(root, fractions=(0.1,), seed=8)["10percent"].read_text()
    assert a == b and a != c
    # Asking for more fractions at once does not change a fraction's subset.
    d = write_label_fractions(root, fractions=(0.01, 0.1, 0.5), seed=7)["10percent"].read_text()
    assert d == a


def test_official_names_and_errors(root: Path) -> None:
    assert fraction_name(0.01) == "1percent" and fraction_name(0.1) == "10percent" and fraction_name(0.005) == "0.5percent"
    with pytest.raises(ValueError, match="fractions"):
        write_label_fractions(root, fractions=(0.0,))
    with pytest.raises(DataError, match="have fewer") as exc:
        write_label_fractions(root, fractions=(), per_class=41)
    assert "c0" in str(exc.value)
    bad = root / "bad.txt"
    bad.write_text("ok_key\nhas.dot\n")
    with pytest.raises(DataError, match="line 2") as exc:
        read_keys(bad)
    assert "bad.txt" in str(exc.value)


def test_a_list_that_cannot_be_made_writes_nothing(tmp_path: Path) -> None:
    """Class c2 holds 2 samples, too few for 10% (3 per class): 1percent.txt was written before the error."""
    labels = np.array([0] * 50 + [1] * 50 + [2] * 2)
    write_shards(array_samples(np.zeros((102, 4, 4), np.uint8), labels, ["c0", "c1", "c2"]), tmp_path, split="train")
    out = tmp_path / "train" / "fractions"
    with pytest.raises(DataError, match="10percent.*c2.*nothing was written"):
        write_label_fractions(tmp_path, fractions=(0.01, 0.1), seed=0)
    assert not out.exists() or not any(out.iterdir())
    # an earlier, whole set of lists stays as it was (not a new seed's 1% beside the old 10% and fractions.json)
    old = write_label_fractions(tmp_path, fractions=(0.01,), seed=0)["1percent"].read_text()
    with pytest.raises(DataError):
        write_label_fractions(tmp_path, fractions=(0.01, 0.1), seed=5)
    assert (out / "1percent.txt").read_text() == old and '"seed": 0' in (out / "fractions.json").read_text()


def test_earlier_lists_are_rewritten_with_the_new_seed(root: Path, tmp_path: Path, caplog) -> None:
    """A call with fewer fractions and another seed left the old 10percent.txt (seed 0) beside a new 1% of seed 5."""
    import json
    import shutil

    write_label_fractions(root, fractions=(0.05, 0.25), seed=0, per_class=3)
    out = root / "train" / "fractions"
    paths = write_label_fractions(root, fractions=(0.05,), seed=5)
    assert set(paths) == {"5percent"}
    fresh = tmp_path / "fresh"
    shutil.copytree(root / "train", fresh / "train", ignore=shutil.ignore_patterns("fractions"))
    again = write_label_fractions(fresh, fractions=(0.05, 0.25), seed=5, per_class=3)
    for name in ("5percent", "25percent", "3perclass"):
        assert (out / f"{name}.txt").read_text() == again[name].read_text(), name
    meta = json.loads((out / "fractions.json").read_text())
    assert meta["seed"] == 5 and set(meta["fractions"]) == {"5percent", "25percent", "3perclass"}
    # an earlier list that the shards can no longer fill (41 per class of 40) is removed, with a warning
    meta["fractions"]["41perclass"] = {"per_class": 41, "count": 410}
    (out / "fractions.json").write_text(json.dumps(meta))
    (out / "41perclass.txt").write_text("stale\n")
    with caplog.at_level("WARNING"):
        write_label_fractions(root, fractions=(0.05,), seed=5)
    assert not (out / "41perclass.txt").exists() and "41perclass" in caplog.text
    assert "41perclass" not in json.loads((out / "fractions.json").read_text())["fractions"]


def _imagenet_like_folder(folder: Path, classes: int = 4, per_class: int = 10) -> Path:
    for c in range(classes):
        d = folder / "train" / f"n0{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (6, 6), (c * 40, i, 0)).save(d / f"n0{c}_{100 + i}.JPEG")
    return folder


def _official_list(path: Path, names: list[str]) -> Path:
    path.write_text("".join(n + "\n" for n in names))
    return path


@pytest.mark.parametrize("made_by", ["imagefolder", "webdataset"])
def test_an_official_list_imports_against_imagefolder_and_webdataset_roots(tmp_path: Path, made_by: str) -> None:
    root = tmp_path / "root"
    if made_by == "imagefolder":
        write_shards(imagefolder_samples(_imagenet_like_folder(tmp_path / "if") / "train"), root, split="train")
    else:  # flat keys, as ImageNet WebDataset sets have them
        (tmp_path / "wds").mkdir()
        with wds.ShardWriter(str(tmp_path / "wds" / "train-%06d.tar"), maxcount=15, verbose=0) as w:
            for c in range(4):
                for i in range(10):
                    buf = io.BytesIO()
                    Image.new("RGB", (6, 6)).save(buf, format="JPEG")
                    w.write({"__key__": f"n0{c}_{100 + i}", "jpg": buf.getvalue(), "cls": c})
        index_webdataset(expand_inputs(tmp_path / "wds"), root, split="train", num_classes=4)
    names = [f"n0{c}_{100 + i}.JPEG" for c in range(4) for i in range(2)]
    path = import_key_list(root, "1percent", _official_list(tmp_path / "1percent.txt", names))
    assert path == fraction_keys_file(root, 0.01)  # finetune.label_fraction=0.01 reads it
    assert len(read_keys(path)) == 8
    entry = json.loads((root / "train" / "fractions" / "fractions.json").read_text())["fractions"]["1percent"]
    assert entry["count"] == 8 and sorted(entry["class_counts"].values()) == [2, 2, 2, 2]
    # Paths and keys match too; the loader reads exactly those samples.
    paths = _official_list(tmp_path / "p.txt", [f"/data/train/n01/n01_10{i}.JPEG" for i in range(3)] + ["n02_105"])
    import_key_list(root, "10percent", paths)
    ld = ShardLoader(root, "train", batch_size=2, mode="eval", size=4, keys_file=fraction_keys_file(root, 0.1))
    assert sorted(ld.keys) == sorted(k for k in open_split(root, "train").keys
                                     if k.rpartition("/")[2] in ("n01_100", "n01_101", "n01_102", "n02_105"))
    # A chosen fraction never replaces an imported list.
    write_label_fractions(root, fractions=(0.01, 0.5), seed=3)
    assert read_keys(path) == sorted(read_keys(path)) and len(read_keys(path)) == 8
    assert set(json.loads((root / "train" / "fractions" / "fractions.json").read_text())["fractions"]) == \
        {"1percent", "10percent", "50percent"}


def test_unmatched_and_ambiguous_names(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_shards(imagefolder_samples(_imagenet_like_folder(tmp_path / "if") / "train"), root, split="train")
    names = ["n00_100.JPEG"] + [f"n09_{i}.JPEG" for i in range(12)]
    listed = _official_list(tmp_path / "l.txt", names)
    with pytest.raises(DataError, match=r"12 of 13 lines match no key .*the first ten: \['n09_0\.JPEG'.*'n09_9\.JPEG'\]"):
        import_key_list(root, "1percent", listed)
    assert not (root / "train" / "fractions" / "1percent.txt").exists()
    assert read_keys(import_key_list(root, "1percent", listed, allow_missing=True)) == ["n00/n00_100"]
    with pytest.raises(ValueError, match="must be a fraction name"):
        import_key_list(root, "official", listed)
    assert match_keys(["x/a.JPEG", "y/a.jpg", "a.png"], ["x/a", "y/a"]) == (["x/a", "y/a"], [], ["a.png"])

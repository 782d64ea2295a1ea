from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr.data.errors import BadSampleError, DataError
from simclr.data.shards.sources import imagefolder_samples


def _img(path: Path, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path, format=fmt)


def test_classes_files_and_keys_are_sorted_and_sanitised(tmp_path: Path) -> None:
    _img(tmp_path / "b" / "z.png")
    _img(tmp_path / "b" / "sub" / "a b.png")
    _img(tmp_path / "a" / "x.v2.jpg", "JPEG")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    src = imagefolder_samples(tmp_path)
    assert src.class_names == ["a", "b"]
    # a folder's files before its sub-folders, each sorted (as torchvision's make_dataset)
    assert [(k, lab) for k, _, lab in src] == [("a/x_v2", 0), ("b/z", 1), ("b/sub/a_b", 1)]
    assert src[0][1][:3] == b"\xff\xd8\xff"  # file bytes, passed on unchanged
    assert src.describe()["num_samples"] == 3


def test_colliding_keys_and_empty_trees_are_errors(tmp_path: Path) -> None:
    _img(tmp_path / "a" / "x.1.png")
    _img(tmp_path / "a" / "x_1.png")
    with pytest.raises(BadSampleError, match="duplicate key") as exc:
        imagefolder_samples(tmp_path)
    assert "a/x_1" in str(exc.value)
    (tmp_path / "empty" / "c").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        imagefolder_samples(tmp_path / "empty")
    with pytest.raises(DataError, match="not a directory"):
        imagefolder_samples(tmp_path / "missing")


def test_empty_class_folders_and_hidden_folders(tmp_path: Path) -> None:
    """An empty class folder became a class (every later index shifted, 1% of each class shrank);
    a hidden sub-folder (.ipynb_checkpoints) added its copies of the images."""
    _img(tmp_path / "cat" / "a.png")
    _img(tmp_path / "dog" / "b.png")
    _img(tmp_path / "dog" / ".ipynb_checkpoints" / "b-checkpoint.png")
    assert [k for k, _, _ in imagefolder_samples(tmp_path)] == ["cat/a", "dog/b"]
    (tmp_path / "__MACOSX").mkdir()
    with pytest.raises(DataError, match=r"\['__MACOSX'\] hold no image file"):
        imagefolder_samples(tmp_path)


def test_a_split_numbers_its_classes_as_the_given_list(tmp_path: Path) -> None:
    """A test split lacking one class keeps the train split's numbering; a class the list lacks is refused."""
    _img(tmp_path / "cat" / "a.png")
    _img(tmp_path / "zebra" / "z.png")
    src = imagefolder_samples(tmp_path, ["cat", "dog", "zebra"])
    assert [(k, lab) for k, _, lab in src] == [("cat/a", 0), ("zebra/z", 2)]
    with pytest.raises(DataError, match=r"\['zebra'\] are not among the classes"):
        imagefolder_samples(tmp_path, ["cat", "dog"])


def test_a_corrupt_image_is_named_by_its_input_file(tmp_path: Path) -> None:
    """A truncated JPEG was reported at the output shard being written (.../train/shard-000000.tar), not at the
    file that is broken."""
    import pickle

    from simclr.data.shards.write import write_shards

    _img(tmp_path / "in" / "cat" / "1.jpg", "JPEG")
    _img(tmp_path / "in" / "cat" / "3.jpg", "JPEG")
    bad = tmp_path / "in" / "cat" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    src = imagefolder_samples(tmp_path / "in")
    with pytest.raises(BadSampleError, match="cannot read/encode the image") as exc:
        write_shards(src, tmp_path / "out", split="train", image_format="png")
    assert str(bad) in str(exc.value) and "cat/3" in str(exc.value) and "shard-0" not in str(exc.value)
    data = src[1][1]
    assert pickle.loads(pickle.dumps(data)).path == str(bad) == data.path  # type: ignore[union-attr]

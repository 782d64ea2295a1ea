import gzip
from pathlib import Path

import numpy as np
import pytest

from simclr.data.errors import DataError
from simclr.data.shards.sources.fashion_mnist import CLASS_NAMES, DEFAULT_ROOT, fashion_mnist_samples


def _write_idx(root: Path, stem: str, images: np.ndarray, labels: np.ndarray, magic: int = 2051) -> None:
    root.mkdir(parents=True, exist_ok=True)
    head = b"".join(int(v).to_bytes(4, "big") for v in (magic, *images.shape))
    with gzip.open(root / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
        f.write(head + images.tobytes())
    with gzip.open(root / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
        f.write((2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes())


def test_reads_idx_files(tmp_path: Path) -> None:
    imgs = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    _write_idx(tmp_path, "t10k", imgs, np.array([0, 9, 4]))
    src = fashion_mnist_samples("test", tmp_path)
    assert len(src) == 3 and src.class_names == CLASS_NAMES
    key, img, label = src[1]
    assert key == "test_00001" and label == 9
    np.testing.assert_array_equal(img, imgs[1])
    assert [k for k, _, _ in src[1:]] == ["test_00001", "test_00002"]


def test_bad_files_are_named(tmp_path: Path) -> None:
    _write_idx(tmp_path, "train", np.zeros((2, 3, 3), np.uint8), np.array([1, 2]), magic=1234)
    with pytest.raises(DataError, match="magic") as exc:
        fashion_mnist_samples("train", tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(exc.value)
    with pytest.raises(DataError, match="not found"):
        fashion_mnist_samples("test", tmp_path)
    _write_idx(tmp_path / "x", "train", np.zeros((2, 3, 3), np.uint8), np.array([1, 12]))
    with pytest.raises(DataError, match="label 12") as exc:
        fashion_mnist_samples("train", tmp_path / "x")
    assert "train_00001" in str(exc.value)
    with pytest.raises(ValueError, match="split"):
        fashion_mnist_samples("val", tmp_path)


@pytest.mark.skipif(not (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").is_file(), reason="needs dataset-fashion-mnist")
def test_the_installed_data_set() -> None:
    train, test = fashion_mnist_samples("train"), fashion_mnist_samples("test")
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape == (60000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10

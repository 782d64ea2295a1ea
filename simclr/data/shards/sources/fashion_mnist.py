"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the idx files of the Debian package ``dataset-fashion-mnist``.

60k train / 10k test grayscale 28x28 images, 10 classes, MIT licence; installed by the set-up in
``/usr/share/datasets/fashion-mnist/`` as ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``. idx format: a
big-endian header (magic 2051 + count + rows + cols for images, magic 2049 + count for labels), then uint8 data.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from simclr.data.errors import DataError
from simclr.data.shards.sources.base import Sample, SampleSource

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FILE_SPLIT = {"train": "train", "test": "t10k", "t10k": "t10k"}


def _read_idx(path: Path, magic: int, ndim: int) -> npt.NDArray[np.uint8]:
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError as e:
        raise DataError("Fashion-MNIST file not found (install the Debian package dataset-fashion-mnist)", path=path) from e
    except (OSError, EOFError) as e:
        raise DataError(f"unreadable idx file: {e}", path=path) from e
    head = 4 * (1 + ndim)
    if len(raw) < head:
        raise DataError("idx file shorter than its header", path=path)
    got_magic, *dims = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, head, 4))
    if got_magic != magic:
        raise DataError(f"idx magic number {got_magic}, expected {magic}", path=path)
    n = int(np.prod(dims))
    if len(raw) - head != n:
        raise DataError(f"idx file has {len(raw) - head} data bytes, header says {n}", path=path)
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


class FashionMNIST(SampleSource):
    """Samples ``(f"{split}_{i:05d}", uint8 [28, 28], label)``; ``split`` is ``train`` or ``test``."""

    name = "fashion_mnist"

    def __init__(self, split: str = "train", root: str | Path = DEFAULT_ROOT) -> None:
        if split not in _FILE_SPLIT:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split = "test" if split == "t10k" else split
        self.root = Path(root)
        stem = _FILE_SPLIT[split]
        self.images_path = self.root / f"{stem}-images-idx3-ubyte.gz"
        self.labels_path = self.root / f"{stem}-labels-idx1-ubyte.gz"
        self.images = _read_idx(self.images_path, 2051, 3)
        self.labels = _read_idx(self.labels_path, 2049, 1)
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels", path=self.labels_path)
        if self.labels.max(initial=0) >= len(CLASS_NAMES):
            bad = int(np.argmax(self.labels >= len(CLASS_NAMES)))
            raise DataError(f"label {self.labels[bad]} outside the 10 classes", path=self.labels_path, key=self._key(bad))
        self.class_names = list(CLASS_NAMES)

    def _key(self, i: int) -> str:
        return f"{self.split}_{i:05d}"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _get(self, i: int) -> Sample:
        return self._key(i), self.images[i], int(self.labels[i])

    def label_at(self, i: int) -> int | None:
        return int(self.labels[i])

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.images_path.read_bytes() + self.labels_path.read_bytes()).hexdigest()
        return {"type": self.name, "split": self.split, "path": str(self.root), "num_samples": len(self), "sha256": digest}


def fashion_mnist_samples(split: str = "train", root: str | Path = DEFAULT_ROOT) -> FashionMNIST:
    """Fashion-MNIST ``split`` ("train" 60k / "test" 10k) as a :class:`SampleSource`."""
    return FashionMNIST(split, root)

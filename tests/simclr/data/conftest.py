"""Shared fixtures for the data tests: a few hundred real Fashion-MNIST images and small written splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simclr.data.shards.sources import array_samples
from simclr.data.shards.sources.fashion_mnist import DEFAULT_ROOT, fashion_mnist_samples
from simclr.data.shards.write import write_shards

torch.set_num_threads(1)

HAVE_FMNIST = (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file()


def smooth_rgb(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``[n, h, w, 3]`` uint8 images with smooth colour blobs (natural-ish statistics, not white noise)."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.random((n, 3, max(2, h // 6), max(2, w // 6)), dtype=np.float32))
    big = torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
    return (big.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="session")
def fmnist_small() -> tuple[np.ndarray, np.ndarray]:
    """The first 300 Fashion-MNIST test images ``[300, 28, 28]`` and labels (synthetic gray if not installed)."""
    if HAVE_FMNIST:
        src = fashion_mnist_samples("test")
        return src.images[:300].copy(), src.labels[:300].astype(np.int64)
    rgb = smooth_rgb(300, 28, 28, seed=1)
    return rgb[..., 0].copy(), np.arange(300) % 10


@pytest.fixture(scope="session")
def uneven_root(tmp_path_factory: pytest.TempPathFactory, fmnist_small: tuple[np.ndarray, np.ndarray]) -> Path:
    """203 real gray images in shards of 50, 50, 50, 50, 3 (train) and 37 in one shard (test)."""
    images, labels = fmnist_small
    root = tmp_path_factory.mktemp("uneven")
    write_shards(array_samples(images[:203], labels[:203], [str(i) for i in range(10)], key_prefix="tr"), root,
                 split="train", max_count=50)
    write_shards(array_samples(images[203:240], labels[203:240], [str(i) for i in range(10)], key_prefix="te"), root,
                 split="test", max_count=50)
    return root


@pytest.fixture(scope="session")
def rgb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 smooth RGB 40x40 images, 4 classes, PNG shards of 20."""
    root = tmp_path_factory.mktemp("rgb")
    write_shards(array_samples(smooth_rgb(48, 40, 40, seed=2), np.arange(48) % 4, ["a", "b", "c", "d"]), root,
                 split="train", max_count=20)
    return root


@pytest.fixture(scope="session")
def rgb_images():
    """``rgb_images(n, h, w, seed=0) -> uint8 [n, h, w, 3]`` smooth test images (test modules cannot import
    conftest, so the helper comes as a fixture)."""
    return smooth_rgb

"""Sample sources for the shard writer: Fashion-MNIST idx files, ImageFolder trees, in-memory arrays."""

from simclr.data.shards.sources.arrays import ArraySource, array_samples, npz_samples
from simclr.data.shards.sources.base import Sample, SampleSource
from simclr.data.shards.sources.fashion_mnist import FashionMNIST, fashion_mnist_samples
from simclr.data.shards.sources.imagefolder import ImageFolderSource, imagefolder_samples

__all__ = [
    "ArraySource",
    "FashionMNIST",
    "ImageFolderSource",
    "Sample",
    "SampleSource",
    "array_samples",
    "fashion_mnist_samples",
    "imagefolder_samples",
    "npz_samples",
]

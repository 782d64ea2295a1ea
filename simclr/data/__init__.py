"""simclr/data: shard writing and reading, label fractions, augmentations.

- Writing: :func:`write_shards` (``shards.py``) from the sources in ``sources/`` (Fashion-MNIST idx files,
  ImageFolder trees, arrays); :func:`write_label_fractions` (``fractions.py``).
- Reading: :class:`ShardLoader` (``loader.py``) over a checked split (``shardset.py``, ``manifest.py``).
- Augmentations: :class:`SimCLRAugment`, :class:`BatchedSimCLRAugment`, :class:`EvalTransform`,
  :func:`view_seed` (``augment.py``).
"""

from simclr.data.augment import BatchedSimCLRAugment, EvalTransform, SimCLRAugment, view_seed
from simclr.data.errors import BadSampleError, DataError, ManifestError
from simclr.data.fractions import read_keys, write_label_fractions
from simclr.data.loader import ShardLoader
from simclr.data.manifest import Manifest, ShardInfo
from simclr.data.shards import finalize_split, write_shards
from simclr.data.shardset import ShardSet, open_split
from simclr.data.sources import array_samples, fashion_mnist_samples, imagefolder_samples, npz_samples

__all__ = [
    "BadSampleError",
    "BatchedSimCLRAugment",
    "DataError",
    "EvalTransform",
    "Manifest",
    "ManifestError",
    "ShardInfo",
    "ShardLoader",
    "ShardSet",
    "SimCLRAugment",
    "array_samples",
    "fashion_mnist_samples",
    "finalize_split",
    "imagefolder_samples",
    "npz_samples",
    "open_split",
    "read_keys",
    "view_seed",
    "write_label_fractions",
    "write_shards",
]

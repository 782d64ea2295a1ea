"""simclr/data/shards: the on-disk format of a split and its writing. Torch-free.

- Format: WebDataset tar shards, one key index per shard (``index.py``), the split manifest (``manifest.py``),
  sample keys (``keys.py``), image encoding and decoding (``codec.py``; its tensor decoder imports torch on
  first call, for the loader).
- Writing: :func:`~simclr.data.shards.write.write_shards` (``write.py``) from the sources in ``sources/``
  (Fashion-MNIST idx files, ImageFolder trees, arrays), with progress lines (``progress.py``); label-fraction key
  lists (``fractions.py``).
- Opening and checking a written split against its manifest, and reading a sample's bytes (``shardset.py``):
  the fraction writer and the shard job's reuse check need it as much as the loader does.

Imported by simclr.data.loading, jobs/ (the shard job ``jobs.cli.shards``, ``jobs.stages.builders``) and benchmarks/.
Imports nothing of simclr but simclr.atomic, simclr.data.errors and simclr.data.rng; never torch or torchvision at
import time (tests/simclr/data/shards/test_torch_free.py).
"""

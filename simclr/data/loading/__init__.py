"""simclr/data/loading: reading written shard splits for training and evaluation (torch).

- :class:`~simclr.data.loading.loader.ShardLoader` (``loader.py``): per-rank batches (two views, labelled, or
  evaluation) over a split opened and checked by :func:`simclr.data.shards.shardset.open_split`, decoded with
  :mod:`simclr.data.shards.codec` and augmented with :mod:`simclr.data.augment`.
- The order of an epoch and its cutting into equal per-rank batches (``order.py``, pure numpy functions).

Imported by jobs/ (``jobs.stages.builders``, ``jobs.stages.finetune``), analysis/ (``analysis.baselines``, inside a function)
and benchmarks/; nothing in simclr/data/shards or simclr/data/augment imports it. Imports simclr.data.shards,
simclr.data.augment, simclr.data.rng and simclr.data.errors.
"""

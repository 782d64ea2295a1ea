"""simclr/runfolder/: the run-folder contract (docs/CONTRACTS.md "Run folder", "Sweep folder"), in one room.

- ``layout.py``: file names, stage and state names, folder naming and hashing, run folders relative to the
  sweep folder;
- ``read.py``: the readers of a run's config, ``status.json`` and ``progress.json``;
- ``metrics.py``: the reader of ``metrics.jsonl``;
- ``write.py``: :class:`RunFolder`, the writer the training loop uses.

Torch-free (numpy and PyYAML only), so ``jobs/`` and ``analysis/`` import it without the training code. It
imports nothing of ``simclr`` but ``simclr.atomic``. No other module opens these files.
"""

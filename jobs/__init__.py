"""jobs/: the SimCLRv2 pipeline as SLURM batch jobs (docs/DESIGN.md "Rooms").

- ``config/``: what a stage run and a sweep are made of: the structured schemas (every default in one place),
  cluster profiles, and the one Hydra composition path. Imports no other part of ``jobs/``.
- ``stages/``: one builder per pipeline stage, the runner that hands a stage's parts to the training loop, and
  the registry of stages. Imports ``config/`` and ``simclr/``; never ``sweep/`` or ``cli/``.
- ``sweep/``: a sweep's life on the cluster: grid expansion, the manifest and job records, the plan, submission
  (SLURM arrays or the local pipeline), the queue reader. Imports ``config/`` (and ``stages/`` only inside the
  task a job runs).
- ``cli/``: the command-line entries (``simclr-sweep``, ``simclr-status``, ...), thin on top of the rest.
- ``conf/``: the Hydra config groups (``model/``, ``data/``, ``cluster/``, ``sweep/``, a YAML per stage).
"""

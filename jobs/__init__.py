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

import importlib.abc
import sys

# The old flat modules (before jobs/ was split into rooms): importing one, or `python -m` on it, says where it
# went (jobs.config and jobs.sweep are the names of rooms now: jobs.config.stage, jobs.cli.sweep).
MOVED: dict[str, str] = {
    "jobs.shards": "simclr-shards (jobs.cli.shards)",
    "jobs.demo": "make demo (python -m jobs.cli.demo)",
    "jobs.sweep_schema": "jobs.config.sweep",
    **{f"jobs.{s}": f"simclr-{s.replace('_', '-')} (jobs.cli.stage), the builder in jobs.stages.{s}"
       for s in ("pretrain", "finetune", "distill", "supervised", "linear_eval")},
    **{f"jobs.{m}": f"jobs.stages.{m}" for m in ("builders", "runner")},
    **{f"jobs.{m}": f"jobs.config.{m}" for m in ("cluster", "structured")},
    **{f"jobs.{m}": f"jobs.sweep.{n}" for m, n in (("grid", "expand"), ("manifest", "manifest"),
                                                      ("submit", "submit"), ("launch", "launch"),
                                                      ("slurm_queue", "queue"))},
    **{f"jobs.{m}": f"simclr-{m} (jobs.cli.{m})" for m in ("status", "resume", "cancel")},
}


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname in MOVED:
            raise ModuleNotFoundError(f"{fullname} has moved: use {MOVED[fullname]}", name=fullname)
        return None


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedFinder())

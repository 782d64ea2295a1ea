"""jobs/stages/: the pipeline stages as library calls.

One module per stage (``pretrain``, ``finetune``, ``distill``, ``supervised``, ``linear_eval``) with a
``build(cfg, device) -> StageParts``; ``builders.py`` holds what they share (backbone, loaders, optimizer);
``registry.py`` maps a stage name to its builder; ``runner.py`` runs one stage in this process (every job,
local or SLURM, multi-node rank or not, calls ``run_stage``).

Imports ``jobs/config/`` and ``simclr/``; never ``jobs/sweep/`` or ``jobs/cli/`` (a sweep reaches a stage
through the task it pickles, by the runner's name).
"""

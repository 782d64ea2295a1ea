"""jobs/sweep/: a sweep's life on the cluster, from definition to finished jobs.

``expand.py`` (definition -> validated tasks), ``manifest.py`` (the sweep folder's records), ``submit.py``
(plan and submission: one SLURM array per stage, dependencies, the report job), ``launch.py`` (the one
submitit wrapper a task runs in), ``queue.py`` (what SLURM says about the jobs).

Imports ``jobs/config/`` and the torch-free ``simclr`` modules; a task imports ``jobs/stages/`` only when it
runs, on the compute node.
"""

"""jobs/sweep/: a sweep's life on the cluster, from definition to finished jobs.

``expand.py`` (definition -> validated tasks), ``manifest.py`` (the manifest and the ``JobRecord`` lines of
``jobs.jsonl``), ``driver.py`` (lock -> plan -> submit, for ``sweep`` and ``resume``), ``submit.py`` (the plan and
the submission: one SLURM array per stage, per-task dependencies, the report job), ``launch.py`` (the one
submitit wrapper a task runs in), ``local_pipeline.py`` (the local executor and its state file), ``queue.py``
(what SLURM says), ``states.py`` (the one state vocabulary), ``status.py`` (the status table and the watch loop).

Imports ``jobs/config/`` and the torch-free ``simclr`` modules; a task reaches ``jobs/stages/`` only when it
runs, through the runner's name (``launch.DEFAULT_RUNNER``).
"""

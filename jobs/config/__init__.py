"""jobs/config/: the schemas of a stage run (``stage.py``) and of a sweep (``sweep.py``), cluster profiles
(``cluster.py``), the dotted-key merge of a dict onto a schema (``structured.py``) and the one Hydra
composition path (``compose.py``).

Imported by ``jobs/stages/``, ``jobs/sweep/`` and ``jobs/cli/``; imports nothing else of ``jobs/`` and no torch.
"""

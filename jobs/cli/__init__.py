"""jobs/cli/: the command-line entries, one module per command (``simclr-sweep``, ``simclr-status``,
``simclr-resume``, ``simclr-cancel``, ``simclr-shards``, ``make demo``). Thin: each parses its arguments and
calls ``jobs/sweep/``, ``jobs/stages/`` or ``simclr/``. Nothing imports ``jobs/cli/`` but the tests.
"""

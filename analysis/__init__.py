"""analysis: sweep run folders -> runs table, ablation tables, plots and a self-contained report page.

Reads run folders only (docs/CONTRACTS.md), never the training code. Entry points:
``analysis.collect.collect`` (runs DataFrame), ``analysis.summary.summarize`` (headline lines),
``analysis.report.build_report`` / ``python -m analysis.report SWEEP_DIR`` (everything).
"""

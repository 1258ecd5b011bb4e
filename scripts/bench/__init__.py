"""The benchmark's parts: presets (model configs), inputs (prompt layouts), methods (the grid), measure (timers,
memory), targets (paired ratios and checks), runner (one model's runs into rows), report (JSON, Markdown, plot).
The CLI is ``scripts/benchmark.py``."""

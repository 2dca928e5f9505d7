"""Sweeps past one machine (issue 18): a TOML grid of models x checkpoints x seeds x rarity x
claims, one Ray task per cell, each cell's results in the result store under a key of its
settings and code version, and one report for the whole sweep.

    spec.py    the TOML file -> SweepSpec (every problem is one BadInputError line)
    cells.py   the grid -> cells, each with its store key
    state.py   what the store says of a cell: done, running, failed (atomic files)
    runner.py  Ray: one task per unfinished cell, retries, progress, failure records
    report.py  SWEEP.md, results.csv, forest plots, the claims report with sweep-wide BH
"""

"""Sweeps: expand `--grid`/`--random` into validated points (`plan`), submit them together as one
SLURM job array or one local job each (`submit`), and read them back (`results`, `plot`).
May import jobs, environment and every package below them.
"""

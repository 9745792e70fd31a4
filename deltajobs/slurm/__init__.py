"""SLURM's commands: argv builders, the one run() seam, pure parsers. Imports: the root only."""

"""SLURM's commands: argv builders, the one run() seam, pure parsers; submitit's private APIs.
May import the root modules only (paths, osutil, schema, errors).
"""

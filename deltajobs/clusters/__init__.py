"""Cluster profiles (YAML with sources), units, sbatch directives, discovery.
May import slurm and the root modules.
"""

"""Cluster profiles (YAML with sources), units, sbatch directives, discovery. Imports: slurm, root."""

"""What runs on the compute node: contract, attempts, ranks, the requeue decision, disk-full, GPU sampling.
May import clusters, slurm and the root modules.
"""

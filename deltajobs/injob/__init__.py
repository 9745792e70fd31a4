"""What runs on the compute node: task wrapper, contract, attempts, disk-full, GPU sampling. Imports: the root only."""

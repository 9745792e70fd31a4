"""deltajobs: take a PyTorch experiment from a laptop to the GPUs of a SLURM cluster and back."""

__version__ = "0.1.0"

"""The packaged trainer that runs inside the job. Torch is imported only by the modules below
this package (never by this file or `config.py`), so the login-node CLI stays light.
May import injob, clusters, slurm and the root modules (torch: only this package).
"""

"""What a job runs, behind one interface (`base.Payload`): the packaged trainer, a user's script or
command, an existing sbatch script, or a Python function; chosen once, from the spec, in `choose.py`
(`train:` or `run:`), and everything above calls the interface; the job's Python (`pyenv.py`).
May import train, injob, clusters, slurm and the root modules; deltajobs.spec only for type hints
(the spec holds a payload).
"""

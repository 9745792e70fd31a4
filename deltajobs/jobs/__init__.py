"""A job's life above the backends: submit, refresh, cancel, resume, logs, the Executor.
May import watch, charge and every package below them; not environment (a sibling).
"""

"""A job's life above the backends: submit, refresh, cancel, resume, logs, the Executor. Imports: charge, below."""

"""Job specs: settings, resolution and validation, context, pure rendering.
May import payloads, train, injob, clusters, slurm and the root modules.
"""

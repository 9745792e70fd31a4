"""Job specs: settings, schema, context, pure rendering, the job's Python. Imports: payloads.config, clusters, below."""

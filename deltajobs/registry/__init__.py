"""Job history: SQLite store, schema, history, rebuild from run dirs, what an id names. Imports: backends, below."""

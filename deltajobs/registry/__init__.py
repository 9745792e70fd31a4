"""Job history: SQLite store, schema, history, rebuild from run dirs, what an id names.
May import backends and every package below it.
"""

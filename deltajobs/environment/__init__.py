"""Will a job find its Python, data and balance: doctor and shell.
May import watch, charge and every package below them; not jobs (a sibling).
"""

"""Will a job find its Python, data and balance: doctor and shell. Imports: charge, backends, below."""

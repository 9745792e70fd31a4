"""Service Units: what a job will cost before it runs (`estimate`), whether the account can pay for
it (`budget`), what jobs were charged after (`accounting`: Delta's `accounts` and `jobcharge`;
`report`: charges from jobcharge or sacct), and how to ask for less next time (`advice`).
May import registry and every package below it; not watch (a sibling).
"""

"""Watching runs: TensorBoard behind its token gate, reports as scalars, plots.
May import registry and every package below it; not charge (a sibling).
"""

"""Watching runs: TensorBoard behind its token gate, reports as scalars, plots. Imports: registry, spec, below."""

"""Reproducible benchmarks; each prints its figures and a ratio to its floor or peer."""

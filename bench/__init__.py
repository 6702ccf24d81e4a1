"""Benchmarks and project generators for thotd (not part of the installed package)."""

"""Benchmarks: the shift against the lower fs and other mappers."""

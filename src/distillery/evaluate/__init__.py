"""Benchmarks, failure patterns, grid reports and the claims page, from recorded trajectories and metrics."""

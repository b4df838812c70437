"""Distillery: a data-versioned pipeline that turns agent trajectories into better agents."""

__version__ = "0.1.0"

"""PGHS: user-group simulation from mined policies, a reasoning branch and a LightGBM branch, fused."""

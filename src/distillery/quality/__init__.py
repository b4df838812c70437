"""Data-quality gates: one Great Expectations suite per artifact, and `gate()`.

    from distillery.quality import SUITES, GateError, gate
    gate(frame, SUITES["episodes"], source="data/trajectories/oracle/episodes.parquet",
         refs={"steps": steps})

Importing this package is cheap: Great Expectations is imported on the first `gate()` call.
"""

from distillery.quality.gate import GateError, GateResult, gate, gate_file
from distillery.quality.suites import SUITES, Suite

__all__ = ["SUITES", "GateError", "GateResult", "Suite", "gate", "gate_file"]

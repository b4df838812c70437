"""The PGHS track through DVC on its micro world: `dvc repro pghs` plans pghs_data and pghs
and nothing else; every output they declare is read from a copy of the session's one
micro-pipeline run, which ran every stage of the same configuration (tests/e2e/conftest.py)."""

from __future__ import annotations

import json

import pytest
from tests.e2e.conftest import PIPELINE_TIMEOUT, planned_stages, up_to_date

from distillery.types import Claim


@pytest.mark.slow
@pytest.mark.timeout(PIPELINE_TIMEOUT)
def test_the_pghs_track_runs_through_dvc(micro_copy):
    repo = micro_copy()
    assert planned_stages(repo, "pghs") == {"pghs_data", "pghs"}

    for rel in ("data/pghs/trajectories.parquet", "metrics/pghs.json", "reports/details/pghs.json",
                "reports/claims/pghs.json", "reports/pghs.md", "models/pghs/simulator.json", "reports/quality/pghs"):
        assert (repo / rel).exists(), rel
    assert list((repo / "reports/pghs").glob("pred_vs_actual_*.png"))
    rows = json.loads((repo / "reports/claims/pghs.json").read_text())
    assert rows and all(Claim.from_dict(r).finding for r in rows)
    assert up_to_date(repo, "pghs")

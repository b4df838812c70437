"""The internalization grid end to end on the micro configuration: cells queued as real DVC
experiments, run two at a time, read back from their Git refs, and published (reports, claims
page, Prefect artifacts). The upstream outputs (and the rest of the pipeline, which the grid's
`dvc repro claims` needs) come from a copy of the session's one pipeline run.

It runs the 2 principle/step-wise cells (`--only principle/stepwise/`: both regimes, so one
finding has its pair), not all 8: each cell is a micro internalize run plus DVC's experiment
overhead (30-90 s on two cores), and the other 6 would exercise nothing new. That the grid
has 8 cells, and how a finding without pairs reads, are tested on the pure pieces
(tests/evaluate/test_grid.py); the recorded 8 x 3 grid is experiments/internalize_grid.json."""

from __future__ import annotations

import json
import sys

import pytest
from flows.grid import exp_refs, internalize_grid
from tests.e2e.conftest import PIPELINE_TIMEOUT, artifact_keys, run

DVC = [sys.executable, "-m", "dvc"]


@pytest.mark.timeout(PIPELINE_TIMEOUT)
def test_grid_queues_cells_runs_them_and_publishes_the_comparison(micro_copy, prefect_harness):
    repo = micro_copy()                             # every output already in the DVC cache
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)

    out = internalize_grid(repo=str(repo), seeds=[0], tag="t0", jobs=2, sets=["internalize.iterations=1"],
                           only="principle/stepwise/")
    assert out["runs"] == out["expected"] == 2, out
    assert len([n for n in exp_refs(repo) if n.startswith("ig-t0-")]) == 2
    grid = json.loads((repo / "experiments/internalize_grid.json").read_text())
    assert grid["tag"] == "t0"
    cells = {(r["granularity"], r["injection"], r["regime"]) for r in grid["runs"]}
    assert cells == {("principle", "stepwise", "off_policy"), ("principle", "stepwise", "on_policy")}
    assert len(grid["runs"]) == 2
    assert all(len(r["metrics"]["iterations"]) == 1 for r in grid["runs"])     # before + 1 iteration
    assert "| principle/stepwise/off_policy | 0 |" in (repo / "reports/internalize_grid.md").read_text()
    assert (repo / "reports/internalize_grid.png").read_bytes()[:4] == b"\x89PNG"
    claims = (repo / "reports/claims.md").read_text()
    assert "## internalize_grid" in claims and "![internalize_grid](internalize_grid.png)" in claims
    # every cell has its row; the 6 not run say so (the other grids' sections have cells too)
    section = claims.split("## internalize_grid", 1)[1].split("\n## ", 1)[0]
    assert section.count("| cell ") == 8 and section.count("no finished run") == 6
    assert "step-wise beats global injection" in claims
    assert "runs: 1 vs 1" in claims         # off- against on-policy: the one finding with a pair
    assert {"internalize-grid", "internalize-grid-claims"} <= artifact_keys()

    # Reading a finished grid back again needs no new runs.
    again = internalize_grid(repo=str(repo), tag="t0", collect_only=True)
    assert again["runs"] == 2 and again["queue"] is None

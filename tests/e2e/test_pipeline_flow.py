"""The Prefect flow runs the DVC stages in order, publishes the gates and the benchmark as
artifacts, and fails when a stage fails. Runs against a temporary local Prefect server.

The full run is the session's shared one (tests/e2e/conftest.py: micro_pipeline), which read
the artifacts back from its server right after the flow; the re-run and the failing stage work
on a copy of its repository."""

from __future__ import annotations

import pytest
import yaml
from flows.pipeline import StageFailed, pipeline, stale_stages
from tests.e2e.conftest import PIPELINE_TIMEOUT


@pytest.mark.timeout(PIPELINE_TIMEOUT)
def test_flow_runs_stages_in_order_and_publishes_artifacts(micro_pipeline, micro_copy):
    order, result = micro_pipeline.order, micro_pipeline.result
    assert order.index("tasks") < order.index("collect@oracle") < order.index("evaluate")
    assert [r["stage"] for r in result["stages"]] == order and all(r["ran"] for r in result["stages"])
    assert {g["suite"] for g in result["gates"]} >= {"tasks", "episodes", "steps"}
    assert all(g["success"] for g in result["gates"])
    assert any(r["policy"] == "oracle" and r["family"] == "all" and r["success_rate"] == 1.0
               for r in result["benchmark"])
    keys = set(micro_pipeline.artifacts)
    assert {"benchmark", "benchmark-summary", "pipeline-stages", "gate-tasks-tasks",
            "gate-collect-oracle-episodes", "gate-collect-random-steps"} <= keys

    # A second run: DVC skips every stage, the flow still succeeds.
    repo = micro_copy()
    again = pipeline(repo=str(repo))
    assert [r["stage"] for r in again["stages"]] == order
    assert not any(r["ran"] for r in again["stages"])

    # A new parameter of the PGHS data: the run's `dvc status` names pghs_data alone, and the
    # simulator downstream of it runs too, because its input changed during the run.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pghs_data"]["traffic"] = params["pghs_data"]["traffic"] * 1.5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert stale_stages(repo) == {"pghs_data"}
    third = pipeline(repo=str(repo), targets=["pghs"])
    assert [(r["stage"], r["ran"]) for r in third["stages"]] == [("pghs_data", True), ("pghs", True)]

    # A stage that fails fails the flow run, with the stage's own error in the message.
    params["policies"]["random"]["kind"] = "no-such-backend"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(StageFailed, match="collect@random"):
        pipeline(repo=str(repo))

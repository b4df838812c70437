"""The agent loop on TextWorldExpress through params alone: the `twx_*` stages (the agent
track's modules with `--track twx`), from tasks to internalization and RL, then the
cross-environment table for this track. `dvc repro` of the track's targets plans those
stages and nothing of the agent track; their outputs are read from a copy of the session's
one micro-pipeline run, which ran every stage of the same configuration
(tests/e2e/conftest.py). Skipped when the optional extra is not installed
(`pip install -e '.[textworld]'`, Java 17)."""

from __future__ import annotations

import json
import sys

import polars as pl
import pytest
from tests.e2e.conftest import PIPELINE_TIMEOUT, planned_stages, run, up_to_date

pytest.importorskip("textworld_express", reason="the textworldexpress track needs pip install -e '.[textworld]' "
                                                "(and Java 17)")

TARGETS = ["twx_internalize", "twx_internalize_seeds", "twx_rl", "twx_play@twx_warmup"]


@pytest.mark.slow
@pytest.mark.heavy_env
@pytest.mark.timeout(PIPELINE_TIMEOUT)
def test_the_textworldexpress_track_runs_end_to_end_through_dvc(micro_copy):
    repo = micro_copy()
    planned = planned_stages(repo, *TARGETS)
    assert {"twx_tasks", "twx_collect@oracle", "twx_warmup", "twx_rollout@twx_warmup", "twx_mine",
            "twx_internalize_seeds@1", "twx_internalize_seeds@2", *TARGETS[:1], *TARGETS[2:]} <= planned
    assert not any(not s.startswith("twx_") for s in planned), planned    # nothing of the agent track

    tasks = pl.read_parquet(repo / "data/twx/tasks/tasks.parquet")
    assert set(tasks["env"]) == {"textworldexpress"} and set(tasks["family"]) == {"twx_coin"}
    assert set(tasks["split"]) == {"train", "test", "heldout_train", "heldout_test"}
    oracle = pl.read_parquet(repo / "data/twx/trajectories/oracle/episodes.parquet")
    assert oracle["success"].all() and oracle.height == tasks.filter(pl.col("split").is_in(["train", "test"])).height
    rollouts = pl.read_parquet(repo / "data/twx/rollouts/twx_warmup/episodes.parquet")
    assert set(rollouts["split"]) == {"heldout_train"} and set(rollouts["env"]) == {"textworldexpress"}
    for f in ("models/twx/warmup/card.json", "models/twx/internalized/model.safetensors",
              "models/twx/rl/model.safetensors", "metrics/twx/mine.json", "reports/claims/twx_internalize.json"):
        assert (repo / f).is_file(), f
    details = json.loads((repo / "reports/twx/details/internalize.json").read_text())
    assert len(details["iterations"]) == 1
    # the other seeds: the same start (greedy, deterministic), their own iterations
    for seed in (1, 2):
        other = json.loads((repo / f"reports/twx/details/internalize-seed{seed}.json").read_text())
        assert other["config"]["seed"] == seed and other["before"] == details["before"]
    assert not (repo / "models/twx/internalized-seed1").exists()
    for stage in ("twx_internalize", "twx_rl"):    # each claims row says how to reproduce it
        rows = json.loads((repo / f"reports/claims/{stage}.json").read_text())
        assert rows and {r["command"] for r in rows} == {f"dvc repro {stage}"}, stage

    run([sys.executable, "-m", "stages.env_table", "--envs", "textworldexpress"], repo)
    rows = json.loads((repo / "reports/claims/environments.json").read_text())
    assert rows[0]["measured"].startswith("textworldexpress: 1.000") and rows[0]["holds"] is True
    assert len(rows) == 7 and all(r["measured"].startswith("textworldexpress: ") for r in rows)
    internalized = next(r for r in rows if r["finding"].startswith("internalized"))
    assert internalized["seeds"] == "textworldexpress: internalization 0,1,2"
    assert next(r for r in rows if "steps per second" in r["finding"])["measured"].endswith(tuple("0123456789"))
    assert up_to_date(repo, *TARGETS)

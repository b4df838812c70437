"""Trajectories that break the contract fail the gate loudly, and nothing downstream runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from distillery.pghs.data import groups_to_json, trajectory_suite
from distillery.quality import GateError, gate

SOURCE = "data/pghs/trajectories.parquet"
REPO = Path(__file__).resolve().parents[2]


def _gate(frame: pl.DataFrame, groups, tmp_path: Path):
    return gate(frame, trajectory_suite([g.name for g in groups]), source=SOURCE,
                report_dir=tmp_path / "reports", quarantine_dir=tmp_path / "quarantine")


def _first_id(frame: pl.DataFrame) -> str:
    return frame["trajectory_id"][3]


def test_generated_trajectories_pass(micro, tmp_path):
    frame, groups, _ = micro
    result = _gate(frame, groups, tmp_path)
    assert result.success and result.n_failed_rows == 0


@pytest.mark.parametrize("case, column, expectation", [
    ("negative counts", "orders", "expect_column_values_to_be_between"),
    ("orders without clicks", "_orders_have_clicks", "expect_column_values_to_be_in_set"),
    ("orders > clicks", "clicks, orders", "expect_column_pair_values_a_to_be_greater_than_b"),
    ("clicks > exposures", "exposures, clicks", "expect_column_pair_values_a_to_be_greater_than_b"),
    ("unknown group", "user_group", "expect_column_values_to_be_in_set"),
    ("missing strategy value", "discount_depth", "expect_column_values_to_not_be_null"),
    ("missing strategy column", "coupon_type", "expect_column_to_exist"),
])
def test_violations_fail_with_file_column_expectation_and_examples(micro, tmp_path, case, column,
                                                                   expectation):
    frame, groups, _ = micro
    bad_id = _first_id(frame)
    row = pl.col("trajectory_id") == bad_id
    broken = {
        "negative counts": lambda f: f.with_columns(pl.when(row).then(-3).otherwise(pl.col("orders")).alias("orders")),
        "orders without clicks": lambda f: f.with_columns(
            pl.when(row).then(0).otherwise(pl.col("clicks")).alias("clicks")),
        "orders > clicks": lambda f: f.with_columns(
            pl.when(row).then(pl.col("clicks") + 5).otherwise(pl.col("orders")).alias("orders")),
        "clicks > exposures": lambda f: f.with_columns(
            pl.when(row).then(pl.col("exposures") + 1).otherwise(pl.col("clicks")).alias("clicks")),
        "unknown group": lambda f: f.with_columns(
            pl.when(row).then(pl.lit("astronauts")).otherwise(pl.col("user_group")).alias("user_group")),
        "missing strategy value": lambda f: f.with_columns(
            pl.when(row).then(None).otherwise(pl.col("discount_depth")).alias("discount_depth")),
        "missing strategy column": lambda f: f.drop("coupon_type"),
    }[case](frame)
    with pytest.raises(GateError) as info:
        _gate(broken, groups, tmp_path)
    message = str(info.value)
    assert SOURCE in message
    failing = [f for f in info.value.result.failures if f["expectation"] == expectation
               and f["column"] == column]
    assert failing, f"{case}: no {expectation} on {column} in {message}"
    assert f"{column}:" in message and expectation in message
    if case != "missing strategy column":        # a missing column: every row offends
        assert bad_id in message                  # the example row is named by its id
        quarantined = pl.read_parquet(info.value.result.quarantine_path)
        assert bad_id in quarantined["trajectory_id"].to_list()


def _stage(module: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_failed_gate_in_the_stage_writes_nothing_downstream(micro, tmp_path):
    """The stage on an imported file with a bad row: exit 1 with the gate's message, no
    trajectories, and the next stage has nothing to run on."""
    frame, groups, _ = micro
    bad_id = _first_id(frame)
    bad = frame.with_columns(pl.when(pl.col("trajectory_id") == bad_id).then(-1)
                             .otherwise(pl.col("exposures")).alias("exposures"))
    bad.write_parquet(tmp_path / "mine.parquet")
    (tmp_path / "groups.json").write_text(json.dumps(groups_to_json(groups)))
    (tmp_path / "params.yaml").write_text(
        "pghs_data:\n  source: mine.parquet\n  groups_file: groups.json\n")
    done = _stage("stages.pghs_data", tmp_path)
    assert done.returncode == 1
    assert "mine.parquet" in done.stderr and "exposures" in done.stderr and bad_id in done.stderr
    assert not (tmp_path / "data/pghs/trajectories.parquet").exists()
    assert (tmp_path / "data/quarantine/pghs/pghs_trajectories.parquet").exists()
    downstream = _stage("stages.pghs", tmp_path)
    assert downstream.returncode != 0 and "run `dvc repro pghs_data`" in downstream.stderr
    assert not (tmp_path / "metrics/pghs.json").exists()

"""The gate on real GX: valid artifacts pass; each corruption fails loudly, names file, column,
expectation and an example id, quarantines exactly the offending rows and leaves its input
byte-identical."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from distillery.quality import SUITES, GateError, GateResult, gate, gate_file


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_at(frame: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    """`frame` with one cell replaced (the column keeps its dtype)."""
    dtype = frame.schema[column]
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value, dtype=dtype))
        .otherwise(pl.col(column)).alias(column))


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return {"report_dir": tmp_path / "reports", "quarantine_dir": tmp_path / "quarantine"}


# ---------------------------------------------------------------------------------------
# Valid artifacts
# ---------------------------------------------------------------------------------------


def test_valid_artifacts_pass_write_reports_and_no_quarantine(tmp_path, dirs, tasks, trajectories):
    episodes, steps = trajectories
    artifacts = {"tasks": (tasks, {}), "episodes": (episodes, {"steps": steps}),
                 "steps": (steps, {"episodes": episodes})}
    for name, (frame, refs) in artifacts.items():
        path = tmp_path / "data" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
        stale = dirs["quarantine_dir"] / f"{name}.parquet"   # from an earlier, failing run
        stale.parent.mkdir(parents=True, exist_ok=True)
        frame.head(1).write_parquet(stale)

        result = gate_file(path, SUITES[name], refs=refs, **dirs)

        assert result.success, result.failures
        assert (result.n_rows, result.n_failed_rows, result.failures) == (frame.height, 0, [])
        assert result.quarantine_path is None and not stale.exists()
        report = json.loads(result.report_json.read_text())
        assert report["success"] is True and report["suite_name"] == name
        assert len(report["results"]) == result.statistics["evaluated_expectations"] > 10
        page = result.report_html.read_text()
        assert page.lstrip().startswith("<!DOCTYPE html>")
        assert "Expectation Validation Result" in page and f"Validations / {name} / {path}" in page
        summary = json.loads((dirs["report_dir"] / f"{name}.summary.json").read_text())
        assert {k: summary[k] for k in ("suite", "source", "success", "n_rows", "n_failed_rows")} \
            == {"suite": name, "source": str(path), "success": True, "n_rows": frame.height,
                "n_failed_rows": 0}
        assert summary["expectations"] == result.summary_rows()
    # Atomic writes leave no temp files behind.
    leftovers = [p.name for d in dirs.values() for p in d.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_summary_rows_are_flat_and_cover_every_expectation(dirs, trajectories):
    episodes, steps = trajectories
    result = gate(episodes, SUITES["episodes"], source="mem", refs={"steps": steps}, **dirs)
    rows = result.summary_rows()
    assert len(rows) == result.statistics["evaluated_expectations"]
    assert all(set(r) == {"expectation", "column", "success", "unexpected_count"} for r in rows)
    assert {"expectation": "expect_column_pair_values_to_be_equal",
            "column": "n_steps, _observed_steps", "success": True, "unexpected_count": 0} in rows
    json.dumps(result.to_dict())     # JSON-safe, for Prefect artifacts


# ---------------------------------------------------------------------------------------
# Corruptions, each through gate_file
# ---------------------------------------------------------------------------------------


@dataclass
class Case:
    suite: str
    frame: pl.DataFrame
    refs: dict[str, pl.DataFrame]
    column: str              # as the message names it
    expectation: str
    example: str             # text identifying an offending row in the message
    rows: list[int]          # offending row numbers, and only those


def _null_key(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 2, "episode_id", None), {"steps": steps},
                "episode_id", "expect_column_values_to_not_be_null", "episode_id=None (row 2)", [2])


def _score_out_of_range(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 1, "score", 1.7), {"steps": steps},
                "score", "expect_column_values_to_be_between", "episode_id=ep-001 (score=1.7)", [1])


def _duplicate_ids(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 3, "episode_id", "ep-002"), {},
                "episode_id", "expect_column_values_to_be_unique", "episode_id=ep-002", [2, 3])


def _score_as_strings(tasks, episodes, steps):
    frame = episodes.with_columns(pl.col("score").cast(pl.String))
    return Case("episodes", frame, {"steps": steps}, "score", "expect_column_values_to_be_of_type",
                "episode_id=ep-000 (score='1.0')", list(range(episodes.height)))


def _missing_column(tasks, episodes, steps):
    return Case("episodes", episodes.drop("wall_s"), {}, "wall_s", "expect_column_to_exist",
                "episode_id=ep-000", list(range(episodes.height)))


def _n_steps_mismatch(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 4, "n_steps", 5), {"steps": steps},
                "n_steps, _observed_steps", "expect_column_pair_values_to_be_equal",
                "episode_id=ep-004 (n_steps=5, _observed_steps=3)", [4])


def _success_below_full_score(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 0, "score", 0.5), {"steps": steps},
                "_success_iff_full_score", "expect_column_values_to_be_in_set",
                "episode_id=ep-000 (success=True, score=0.5)", [0])


def _failure_with_full_score(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 1, "score", 1.0), {"steps": steps},
                "_success_iff_full_score", "expect_column_values_to_be_in_set",
                "episode_id=ep-001 (success=False, score=1.0)", [1])


def _success_with_failed_checks(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 2, "failed_checks", ["mail_sent(to=a@b.co)"]),
                {"steps": steps}, "_success_iff_no_failed_checks", "expect_column_values_to_be_in_set",
                "episode_id=ep-002 (success=True, failed_checks=['mail_sent(to=a@b.co)'])", [2])


def _failure_without_failed_checks(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 3, "failed_checks", []), {"steps": steps},
                "_success_iff_no_failed_checks", "expect_column_values_to_be_in_set",
                "episode_id=ep-003 (success=False, failed_checks=[])", [3])


def _success_with_a_failure_mode(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 4, "failure_mode", "incomplete"), {"steps": steps},
                "_success_iff_mode_none", "expect_column_values_to_be_in_set",
                "episode_id=ep-004 (success=True, failure_mode='incomplete')", [4])


def _failure_with_mode_none(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 5, "failure_mode", "none"), {"steps": steps},
                "_success_iff_mode_none", "expect_column_values_to_be_in_set",
                "episode_id=ep-005 (success=False, failure_mode='none')", [5])


def _nan_score(tasks, episodes, steps):
    return Case("episodes", set_at(episodes, 1, "score", float("nan")), {"steps": steps},
                "_numbers_finite", "expect_column_values_to_be_in_set",
                "episode_id=ep-001 (score=nan, cost_usd=0.001, wall_s=0.5)", [1])


def _unknown_column(tasks, episodes, steps):
    frame = episodes.with_columns(pl.lit("debug").alias("notes"))
    return Case("episodes", frame, {"steps": steps}, "notes", "expect_table_columns_to_match_set",
                "episode_id=ep-000 (notes='debug')", list(range(episodes.height)))


def _orphan_steps(tasks, episodes, steps):
    # The last step of ep-002, so that ep-002 stays numbered 0..n-1.
    return Case("steps", set_at(steps, 8, "episode_id", "ep-999"), {"episodes": episodes},
                "_episode_known", "expect_column_values_to_be_in_set",
                "e.g. episode_id=ep-999, t=2\n", [8])


def _step_numbers_with_a_gap(tasks, episodes, steps):
    # 0, 1, 5: unique, non-negative and the right count, but not 0..n-1.
    return Case("steps", set_at(steps, 2, "t", 5), {"episodes": episodes},
                "_t_in_sequence", "expect_column_values_to_be_in_set",
                "episode_id=ep-000, t=5", [2])


def _step_numbers_not_from_zero(tasks, episodes, steps):
    frame = steps.with_columns(pl.when(pl.col("episode_id") == "ep-001").then(pl.col("t") + 1)
                               .otherwise(pl.col("t")).alias("t"))
    return Case("steps", frame, {"episodes": episodes}, "_t_in_sequence",
                "expect_column_values_to_be_in_set", "episode_id=ep-001, t=1", [3, 4, 5])


def _reward_out_of_range(tasks, episodes, steps):
    return Case("steps", set_at(steps, 5, "reward", 2.0), {"episodes": episodes},
                "_reward_in_range", "expect_column_values_to_be_in_set",
                "episode_id=ep-001, t=2 (reward=2.0)", [5])


def _nan_reward(tasks, episodes, steps):
    return Case("steps", set_at(steps, 5, "reward", float("nan")), {"episodes": episodes},
                "_reward_finite", "expect_column_values_to_be_in_set",
                "episode_id=ep-001, t=2 (reward=nan)", [5])


def _duplicate_step(tasks, episodes, steps):
    return Case("steps", set_at(steps, 4, "t", 0), {"episodes": episodes},
                "episode_id, t", "expect_compound_columns_to_be_unique", "episode_id=ep-001, t=0",
                [3, 4])


def _valid_step_with_error(tasks, episodes, steps):
    return Case("steps", set_at(steps, 0, "error", "boom"), {},
                "_error_empty_when_valid", "expect_column_values_to_be_in_set",
                "episode_id=ep-000, t=0 (valid=True, error='boom')", [0])


def _infinite_reward(tasks, episodes, steps):
    return Case("steps", set_at(steps, 5, "reward", float("inf")), {},
                "_reward_finite", "expect_column_values_to_be_in_set",
                "episode_id=ep-001, t=2 (reward=inf)", [5])


def _task_json_broken(tasks, episodes, steps):
    return Case("tasks", set_at(tasks, 2, "checks", "[{not json"), {},
                "_json_ok", "expect_column_values_to_be_in_set",
                "task_id=task-2 (initial_state=", [2])


def _max_steps_below_reference(tasks, episodes, steps):
    return Case("tasks", set_at(tasks, 1, "max_steps", 0), {},
                "max_steps, n_ref_steps", "expect_column_pair_values_a_to_be_greater_than_b",
                "task_id=task-1 (max_steps=0, n_ref_steps=1)", [1])


CASES: dict[str, Callable[[pl.DataFrame, pl.DataFrame, pl.DataFrame], Case]] = {
    f.__name__.lstrip("_"): f for f in (
        _null_key, _score_out_of_range, _duplicate_ids, _score_as_strings, _missing_column,
        _n_steps_mismatch, _success_below_full_score, _failure_with_full_score,
        _success_with_failed_checks, _failure_without_failed_checks, _success_with_a_failure_mode,
        _failure_with_mode_none, _nan_score, _unknown_column, _orphan_steps, _duplicate_step,
        _step_numbers_with_a_gap, _step_numbers_not_from_zero, _valid_step_with_error,
        _infinite_reward, _reward_out_of_range, _nan_reward, _task_json_broken,
        _max_steps_below_reference)
}


@pytest.mark.parametrize("name", list(CASES))
def test_corruption_fails_names_it_and_quarantines_only_offending_rows(name, tmp_path, dirs, tasks,
                                                                       trajectories):
    case = CASES[name](tasks, *trajectories)
    path = tmp_path / "data" / "run" / f"{case.suite}.parquet"
    path.parent.mkdir(parents=True)
    case.frame.write_parquet(path)
    before = sha256(path)

    with pytest.raises(GateError) as err:
        gate_file(path, SUITES[case.suite], refs=case.refs, **dirs)

    message = str(err.value)
    header, *lines = message.splitlines()
    assert str(path) in header and f"{len(case.rows)} of {case.frame.height} rows offend" in header
    line = next((ln for ln in lines if ln.startswith(f"  - {case.column}: {case.expectation}")),
                None)
    assert line is not None, message
    assert case.example in line + "\n", message
    assert sha256(path) == before

    result = err.value.result
    assert not result.success and result.n_failed_rows == len(case.rows)
    assert any(f["expectation"] == case.expectation for f in result.failures)
    quarantined = pl.read_parquet(result.quarantine_path)
    assert result.quarantine_path == dirs["quarantine_dir"] / f"{case.suite}.parquet"
    assert_frame_equal(quarantined.drop("_reason"), case.frame[case.rows])
    assert all(case.expectation in reason for reason in quarantined["_reason"])


def test_a_nan_reward_is_reported_as_not_finite_not_as_null(dirs, trajectories):
    episodes, steps = trajectories
    with pytest.raises(GateError) as err:
        gate(set_at(steps, 5, "reward", float("nan")), SUITES["steps"], source="mem",
             refs={"episodes": episodes}, **dirs)
    failed = {(f["column"], f["expectation"]) for f in err.value.result.failures}
    assert failed == {("_reward_finite", "expect_column_values_to_be_in_set")}, failed


def test_the_reward_range_is_the_environments_declared_one(dirs, trajectories):
    from distillery.envs.base import env_spec
    from distillery.quality.suites import declared_reward_range

    assert declared_reward_range("stage") == env_spec("stage").reward_range == (0.0, 1.0)
    assert declared_reward_range("no-such-env") is None
    episodes, steps = trajectories
    with pytest.raises(GateError, match=r"declared reward_range \(stage: \[0, 1\]\)"):
        gate(set_at(steps, 0, "reward", -0.5), SUITES["steps"], source="mem",
             refs={"episodes": episodes}, **dirs)
    # An environment no plugin registers has no range to hold its rewards to.
    other = episodes.with_columns(pl.lit("unregistered").alias("env"))
    assert gate(set_at(steps, 0, "reward", 7.0), SUITES["steps"], source="mem",
                refs={"episodes": other}, **dirs).success


def test_a_suite_may_allow_extra_columns_explicitly(dirs, trajectories):
    import dataclasses

    episodes, steps = trajectories
    suite = dataclasses.replace(SUITES["episodes"], extra_columns=("notes",))
    frame = episodes.with_columns(pl.lit("debug").alias("notes"))
    assert gate(frame, suite, source="mem", refs={"steps": steps}, **dirs).success
    with pytest.raises(ValueError, match="extra_columns"):
        dataclasses.replace(SUITES["episodes"], extra_columns=("score",))


def test_truncated_parquet_fails_and_is_copied_not_moved(tmp_path, dirs, trajectories):
    episodes, _ = trajectories
    path = tmp_path / "episodes.parquet"
    episodes.write_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = sha256(path)

    with pytest.raises(GateError) as err:
        gate_file(path, SUITES["episodes"], **dirs)

    message = str(err.value)
    assert str(path) in message and "parquet" in message
    assert "out of specification" in message          # polars' own words
    assert sha256(path) == before
    copy = dirs["quarantine_dir"] / "episodes.unreadable.parquet"
    assert sha256(copy) == before
    note = (dirs["quarantine_dir"] / "episodes.unreadable.txt").read_text()
    assert str(path) in note and "out of specification" in note
    assert err.value.result.quarantine_path == copy
    assert json.loads(err.value.result.report_json.read_text())["success"] is False

    # Fixed and re-run: the stale unreadable copy goes away with the failure.
    episodes.write_parquet(path)
    assert gate_file(path, SUITES["episodes"], **dirs).success
    assert sorted(p.name for p in dirs["quarantine_dir"].iterdir()) == []


# ---------------------------------------------------------------------------------------
# gate() on frames
# ---------------------------------------------------------------------------------------


def test_row_failing_several_expectations_gets_every_reason(dirs, trajectories):
    episodes, steps = trajectories
    frame = set_at(set_at(episodes, 0, "score", 1.7), 0, "invalid_actions", -1)
    kept = frame.clone()

    result = gate(frame, SUITES["episodes"], source="mem", refs={"steps": steps},
                  raise_on_failure=False, **dirs)

    assert_frame_equal(frame, kept)                  # the input frame is untouched
    assert not result.success and result.n_failed_rows == 1
    reasons = pl.read_parquet(result.quarantine_path)["_reason"].to_list()
    assert len(reasons) == 1
    parts = reasons[0].split("; ")
    assert "expect_column_values_to_be_between(score) [min 0, max 1]" in parts
    assert "expect_column_values_to_be_between(invalid_actions) [min 0]" in parts
    assert any(p.startswith("expect_column_values_to_be_in_set(_success_iff_full_score)")
               for p in parts)
    assert len(parts) == 3


def test_examples_are_capped_at_five_per_expectation(dirs, trajectories):
    episodes, _ = trajectories
    frame = episodes.with_columns(pl.lit(-1.0).alias("cost_usd"))
    with pytest.raises(GateError) as err:
        gate(frame, SUITES["episodes"], source="mem", **dirs)
    (line,) = [ln for ln in str(err.value).splitlines() if ln.startswith("  - cost_usd:")]
    assert "6 rows" in line and line.count("episode_id=") == 5


def test_gate_error_pickles_with_its_result(dirs, trajectories):
    episodes, _ = trajectories
    with pytest.raises(GateError) as err:
        gate(set_at(episodes, 1, "score", -0.1), SUITES["episodes"], source="mem", **dirs)
    copy = pickle.loads(pickle.dumps(err.value))
    assert str(copy) == str(err.value) and isinstance(copy.result, GateResult)
    assert copy.result.failures == err.value.result.failures


def test_gate_refuses_to_overwrite_its_input(dirs, trajectories):
    episodes, _ = trajectories
    path = dirs["quarantine_dir"] / "episodes.parquet"
    path.parent.mkdir(parents=True)
    episodes.write_parquet(path)
    before = sha256(path)
    with pytest.raises(ValueError, match="one of the gate's own outputs"):
        gate_file(path, SUITES["episodes"], **dirs)
    assert sha256(path) == before


def test_a_few_thousand_rows_gate_with_cross_table_checks(dirs, make_trajectories):
    """Speed is measured in bench/gate_throughput.py, beside GX alone."""
    episodes, steps = make_trajectories(n_episodes=2000, steps_per_episode=3)
    assert gate(episodes, SUITES["episodes"], source="mem", refs={"steps": steps}, **dirs).success
    assert gate(steps, SUITES["steps"], source="mem", refs={"episodes": episodes}, **dirs).success


def test_refs_that_do_not_fit_their_schema_raise_a_clear_error(dirs, trajectories):
    episodes, steps = trajectories
    with pytest.raises(ValueError, match=r"refs given: \['steps'\]"):
        gate(episodes, SUITES["episodes"], source="mem",
             refs={"steps": steps.rename({"episode_id": "episode"})}, **dirs)

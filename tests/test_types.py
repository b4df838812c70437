"""Task tables read back: a table of TASK_SCHEMA's shape round-trips; one of another shape is
a TaskTableError naming the table, the column and, for a row, the task."""

from __future__ import annotations

import polars as pl
import pytest

from distillery.types import Task, TaskTableError, ToolCall, tasks_from_frame, tasks_to_frame

TASK = Task(task_id="t-0", family="f", split="test", profile="default", hint="h", instruction="file the invoice",
            initial_state={"files": {"a.txt": "x"}}, reference_solution=[ToolCall("move_file", {"src": "a.txt"})],
            checks=[{"type": "file_exists", "path": "b.txt"}], preferences=["tidy"], seed=3, max_steps=9)


def test_a_task_table_round_trips():
    other = Task(**{**TASK.__dict__, "task_id": "t-1", "env": "sql"})
    assert tasks_from_frame(tasks_to_frame([TASK, other])) == [TASK, other]


def test_optional_columns_absent_or_null_take_their_defaults():
    frame = tasks_to_frame([TASK])
    (task,) = tasks_from_frame(frame.drop("env", "preferences", "seed", "max_steps", "n_ref_steps"))
    assert (task.env, task.preferences, task.seed, task.max_steps) == ("stage", [], 0, 15)
    nulls = frame.with_columns(pl.lit(None, dtype=pl.String).alias("env"), pl.lit(None, dtype=pl.Int64).alias("seed"))
    (task,) = tasks_from_frame(nulls)
    assert (task.env, task.seed) == ("stage", 0)


def _set(column: str, value: object, dtype: pl.DataType | None = None):
    return lambda f: f.with_columns(pl.lit(value, dtype=dtype).alias(column))


DAMAGES = {
    "a required column missing": (lambda f: f.drop("checks"), "not a task table: no column checks"),
    "text where a number belongs": (_set("seed", "three"), "column seed is String, not Int64"),
    "a number where text belongs": (_set("instruction", 5), "column instruction is Int32, not String"),
    "a null in a required column": (_set("checks", None, pl.String), "column checks has 1 null(s), the first in task 't-0'"),
    "a state that is not JSON": (_set("initial_state", "{files"), "task 't-0' (row 0): initial_state is not JSON"),
    "a state that is a list": (_set("initial_state", "[]"), "initial_state is a JSON list, not an object"),
    "a number too long to convert": (_set("checks", "[" + "9" * 5000 + "]"), "checks is not JSON (Exceeds the limit"),
    "a solution of numbers": (_set("reference_solution", "[1, 2]"), "reference_solution: expected a list of"),
    "a call without a tool": (_set("reference_solution", '[{"args": {}}]'), "reference_solution: expected a list of"),
    "checks that are not objects": (_set("checks", '["file_exists"]'), "checks: expected a list of JSON objects"),
    "no step allowed": (_set("max_steps", -5), "task 't-0' (row 0): max_steps is -5: an episode needs at least 1 step"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_table_of_another_shape_is_one_error_naming_table_column_and_task(damage):
    spoil, says = DAMAGES[damage]
    frame = spoil(tasks_to_frame([TASK]))
    with pytest.raises(TaskTableError) as e:
        tasks_from_frame(frame, "my/tasks.parquet")
    assert str(e.value).startswith("my/tasks.parquet: ") and says in str(e.value), str(e.value)

"""The data contract of every gated artifact: one Great Expectations suite per artifact.

A `Suite` is data: the artifact's name, the columns that identify a row, its polars schema
(from `types.py`, nowhere else), the GX expectations its rows must meet, and an optional
`derive` step. `derive` adds the facts GX cannot compute from one row of one table (JSON that
parses, a step count read from another table) as boolean or numeric columns prefixed "_",
which the expectations then check like any other column. The gate checks the schema itself
(every column present, with its dtype), so the expectations below are about values only.

Great Expectations takes ~3 s to import, so it is imported inside the expectation builders,
never at module level: naming a suite must stay cheap for every stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from distillery.types import EPISODE_SCHEMA, FAILURE_MODES, SPLITS, STEP_SCHEMA, TASK_SCHEMA

Refs = dict[str, pl.DataFrame]


@dataclass(frozen=True)
class Suite:
    """One artifact's contract.

    `expectations(refs)` returns fresh GX expectation objects; `refs` are other artifacts of
    the same run (e.g. the steps when gating episodes) and may switch cross-table checks on.
    `derive(frame, refs)` returns `frame` plus derived "_" columns, same rows, same order.
    """

    name: str
    id_columns: tuple[str, ...]
    schema: dict[str, pl.DataType]
    expectations: Callable[[Refs], list]
    derive: Callable[[pl.DataFrame, Refs], pl.DataFrame] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        unknown = [c for c in self.id_columns if c not in self.schema]
        if not self.id_columns or unknown:
            raise ValueError(f"suite {self.name!r}: id_columns {list(self.id_columns)} must be "
                             f"non-empty columns of its schema (unknown: {unknown})")


# ---------------------------------------------------------------------------------------
# Building blocks. Each returns GX expectations; together they read like the contract.
# ---------------------------------------------------------------------------------------


def _gxe() -> Any:
    import great_expectations.expectations as gxe

    return gxe


def not_null(*columns: str) -> list:
    gxe = _gxe()
    return [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]


def unique(*columns: str) -> list:
    """One column unique, or several unique together."""
    gxe = _gxe()
    if len(columns) == 1:
        return [gxe.ExpectColumnValuesToBeUnique(column=columns[0])]
    return [gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns))]


def at_least(minimum: float, *columns: str) -> list:
    gxe = _gxe()
    return [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=minimum) for c in columns]


def between(column: str, minimum: float, maximum: float) -> list:
    return [_gxe().ExpectColumnValuesToBeBetween(column=column, min_value=minimum,
                                                  max_value=maximum)]


def one_of(column: str, values: tuple[str, ...]) -> list:
    return [_gxe().ExpectColumnValuesToBeInSet(column=column, value_set=list(values))]


def a_at_least_b(a: str, b: str) -> list:
    # A null on either side is the not-null checks' business, not a comparison failure.
    return [_gxe().ExpectColumnPairValuesAToBeGreaterThanB(
        column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing")]


def equal(a: str, b: str) -> list:
    return [_gxe().ExpectColumnPairValuesToBeEqual(
        column_A=a, column_B=b, ignore_row_if="either_value_is_missing")]


def holds(column: str, description: str, *, show: tuple[str, ...] = ()) -> list:
    """A derived boolean column must be True on every row (null means "not applicable").

    `show` names the input columns whose values explain a failure; the gate's examples show
    them instead of the derived `False`.
    """
    return [_gxe().ExpectColumnValuesToBeInSet(column=column, value_set=[True],
                                                description=description,
                                                meta={"show": list(show)})]


# ---------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------


def _task_expectations(refs: Refs) -> list:
    return [
        *not_null("task_id", "env", "family", "split", "profile", "instruction",
                  "initial_state", "reference_solution", "checks", "seed", "max_steps",
                  "n_ref_steps"),
        *unique("task_id"),
        *one_of("split", SPLITS),
        *at_least(1, "n_ref_steps"),
        *at_least(0, "seed"),
        *a_at_least_b("max_steps", "n_ref_steps"),
        *holds("_json_ok", "initial_state is a JSON object; reference_solution and checks "
                           "are JSON lists",
               show=("initial_state", "reference_solution", "checks")),
    ]


def _json_is(text: str | None, kind: type) -> bool | None:
    if text is None:
        return None
    try:
        return isinstance(json.loads(text), kind)
    except ValueError:  # json.JSONDecodeError is one
        return False


def _derive_tasks(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    ok = []
    for state, solution, checks in frame.select(
            "initial_state", "reference_solution", "checks").iter_rows():
        parts = [_json_is(state, dict), _json_is(solution, list), _json_is(checks, list)]
        # A null part is reported by not_null; here it only makes the row "not applicable".
        ok.append(False if False in parts else None if None in parts else True)
    return frame.with_columns(pl.Series("_json_ok", ok, dtype=pl.Boolean))


TASKS = Suite(
    name="tasks",
    id_columns=("task_id",),
    schema=TASK_SCHEMA,
    expectations=_task_expectations,
    derive=_derive_tasks,
    description="Generated tasks: unique ids, known splits, parseable declarative state.",
)


# ---------------------------------------------------------------------------------------
# episodes
# ---------------------------------------------------------------------------------------


def _episode_expectations(refs: Refs) -> list:
    checks = [
        *not_null("episode_id", "task_id", "policy", "family", "split", "success", "score",
                  "n_steps", "invalid_actions", "tokens_in", "tokens_out", "cost_usd",
                  "wall_s", "failure_mode"),
        *unique("episode_id"),
        *one_of("split", SPLITS),
        *between("score", 0, 1),
        *holds("_success_implies_full_score", "success implies score == 1",
               show=("success", "score")),
        *at_least(0, "n_steps", "invalid_actions", "tokens_in", "tokens_out", "cost_usd",
                  "wall_s"),
        *a_at_least_b("n_steps", "invalid_actions"),
        *one_of("failure_mode", FAILURE_MODES),
    ]
    if "steps" in refs:
        checks += equal("n_steps", "_observed_steps")
    return checks


def _derive_episodes(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    # Kleene logic: an unsuccessful episode holds whatever its score; a null stays null.
    frame = frame.with_columns(
        (~pl.col("success") | (pl.col("score") == 1.0)).alias("_success_implies_full_score"))
    if "steps" in refs:
        counts = (refs["steps"].group_by("episode_id")
                  .agg(pl.len().cast(pl.Int64).alias("_observed_steps")))
        frame = frame.join(counts, on="episode_id", how="left", maintain_order="left")
        frame = frame.with_columns(
            pl.when(pl.col("episode_id").is_not_null())
            .then(pl.col("_observed_steps").fill_null(0))
            .alias("_observed_steps"))
    return frame


EPISODES = Suite(
    name="episodes",
    id_columns=("episode_id",),
    schema=EPISODE_SCHEMA,
    expectations=_episode_expectations,
    derive=_derive_episodes,
    description="One row per episode: unique ids, scores in [0, 1], counts that add up.",
)


# ---------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------


def _step_expectations(refs: Refs) -> list:
    checks = [
        *not_null("episode_id", "t", "valid", "reward"),
        *unique("episode_id", "t"),
        *at_least(0, "t", "tokens_in", "tokens_out"),
        *holds("_reward_finite", "reward is finite", show=("reward",)),
        *holds("_error_empty_when_valid", "a valid step has an empty error",
               show=("valid", "error")),
    ]
    if "episodes" in refs:
        checks += holds("_episode_known", "episode_id is one of the gated run's episodes",
                        show=("episode_id",))
    return checks


def _derive_steps(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    frame = frame.with_columns(
        pl.col("reward").is_finite().alias("_reward_finite"),
        (~pl.col("valid") | (pl.col("error").fill_null("") == "")).alias("_error_empty_when_valid"),
    )
    if "episodes" in refs:
        known = refs["episodes"].get_column("episode_id").drop_nulls().unique()
        frame = frame.with_columns(
            pl.col("episode_id").is_in(known.implode()).alias("_episode_known"))
    return frame


STEPS = Suite(
    name="steps",
    id_columns=("episode_id", "t"),
    schema=STEP_SCHEMA,
    expectations=_step_expectations,
    derive=_derive_steps,
    description="One row per step: (episode_id, t) unique, finite rewards, no orphan steps.",
)


SUITES: dict[str, Suite] = {s.name: s for s in (TASKS, EPISODES, STEPS)}

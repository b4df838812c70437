"""The data contract of every gated artifact: one Great Expectations suite per artifact.

A `Suite` is data: the artifact's name, the columns that identify a row, its polars schema
(from `types.py`, nowhere else), the GX expectations its rows must meet, and an optional
`derive` step. `derive` adds the facts GX cannot compute from one row of one table (JSON that
parses, a step count read from another table, steps numbered without gaps, an outcome whose
fields agree) as boolean or numeric columns prefixed "_", which the expectations then check
like any other column. The gate checks the schema itself (every column present, with its
dtype, and no column the suite does not name unless it lists it in `extra_columns`), so the
expectations below are about values only.

Great Expectations takes ~3 s to import, so it is imported inside the expectation builders,
never at module level: naming a suite must stay cheap for every stage.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import polars as pl

from distillery.types import (
    DRAFT_ATTEMPT_SCHEMA,
    DRAFT_REASON_KINDS,
    DRAFT_VERDICTS,
    EPISODE_SCHEMA,
    FAILURE_MODES,
    SPLITS,
    STEP_SCHEMA,
    TASK_SCHEMA,
)

Refs = dict[str, pl.DataFrame]


@dataclass(frozen=True)
class Suite:
    """One artifact's contract.

    `expectations(refs)` returns fresh GX expectation objects; `refs` are other artifacts of
    the same run (e.g. the steps when gating episodes) and may switch cross-table checks on.
    `derive(frame, refs)` returns `frame` plus derived "_" columns, same rows, same order.
    `extra_columns` are columns a frame may carry beyond the schema, unchecked; any other
    column the schema does not name fails the gate (a writer that adds one says so here).
    """

    name: str
    id_columns: tuple[str, ...]
    schema: dict[str, pl.DataType]
    expectations: Callable[[Refs], list]
    derive: Callable[[pl.DataFrame, Refs], pl.DataFrame] | None = None
    description: str = ""
    extra_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [c for c in self.id_columns if c not in self.schema]
        if not self.id_columns or unknown:
            raise ValueError(f"suite {self.name!r}: id_columns {list(self.id_columns)} must be "
                             f"non-empty columns of its schema (unknown: {unknown})")
        both = [c for c in self.extra_columns if c in self.schema or c.startswith("_")]
        if both:
            raise ValueError(f"suite {self.name!r}: extra_columns {both} are schema columns or "
                             f"start with '_' (reserved for derived columns)")


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
        *holds("_numbers_finite", "score, cost_usd and wall_s are finite numbers",
               show=("score", "cost_usd", "wall_s")),
        # One outcome, four fields: success <=> score 1 <=> no failed check <=> mode "none".
        *holds("_success_iff_full_score", "success if and only if score == 1",
               show=("success", "score")),
        *holds("_success_iff_no_failed_checks", "success if and only if no check failed",
               show=("success", "failed_checks")),
        *holds("_success_iff_mode_none", 'success if and only if failure_mode is "none"',
               show=("success", "failure_mode")),
        *at_least(0, "n_steps", "invalid_actions", "tokens_in", "tokens_out", "cost_usd",
                  "wall_s"),
        *a_at_least_b("n_steps", "invalid_actions"),
        *one_of("failure_mode", FAILURE_MODES),
    ]
    if "steps" in refs:
        checks += equal("n_steps", "_observed_steps")
    return checks


def _derive_episodes(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    # A null on either side stays null ("not applicable"): not_null reports it.
    success = pl.col("success")
    frame = frame.with_columns(
        pl.all_horizontal(pl.col("score", "cost_usd", "wall_s").is_finite()).alias("_numbers_finite"),
        (success == (pl.col("score") == 1.0)).alias("_success_iff_full_score"),
        (success == (pl.col("failed_checks").list.len() == 0)).alias("_success_iff_no_failed_checks"),
        (success == (pl.col("failure_mode") == "none")).alias("_success_iff_mode_none"),
    )
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
    description="One row per episode: unique ids, scores in [0, 1], counts that add up, one outcome "
                "(success, score, failed checks and failure mode agree).",
)


# ---------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------


def _step_expectations(refs: Refs) -> list:
    checks = [
        *not_null("episode_id", "t", "valid", "reward"),
        *unique("episode_id", "t"),
        *at_least(0, "t", "tokens_in", "tokens_out"),
        *holds("_t_in_sequence", "an episode's steps are numbered 0, 1, ..., n-1",
               show=("t",)),
        *holds("_reward_finite", "reward is finite", show=("reward",)),
        *holds("_error_empty_when_valid", "a valid step has an empty error",
               show=("valid", "error")),
    ]
    if "episodes" in refs:
        checks += holds("_episode_known", "episode_id is one of the gated run's episodes",
                        show=("episode_id",))
        ranges = _ranges_text(refs["episodes"])
        checks += holds("_reward_in_range", "reward is within its environment's declared "
                        f"reward_range ({ranges})", show=("reward",))
    return checks


@functools.cache
def declared_reward_range(env: str) -> tuple[float, float] | None:
    """The `reward_range` environment `env` declares in its plugin entry (`EnvSpec`), or None
    for a name no installed plugin registers. Read through the entry point, as every plugin
    is found: the gate needs no import of the environments' layer."""
    for ep in entry_points(group="distillery.envs", name=env):
        low, high = getattr(ep.load(), "reward_range", (-math.inf, math.inf))
        return float(low), float(high)
    return None


def _ranges(episodes: pl.DataFrame) -> pl.DataFrame:
    """env -> (_reward_low, _reward_high) for the environments of `episodes`."""
    rows = [(env, *rr) for env in sorted(episodes.get_column("env").drop_nulls().unique().to_list())
            if (rr := declared_reward_range(env)) is not None]
    return pl.DataFrame(rows, schema={"env": pl.String, "_reward_low": pl.Float64,
                                      "_reward_high": pl.Float64}, orient="row")


def _ranges_text(episodes: pl.DataFrame) -> str:
    def num(x: float) -> str:
        return str(int(x)) if x.is_integer() else str(x)

    return ", ".join(f"{env}: [{num(lo)}, {num(hi)}]" for env, lo, hi in _ranges(episodes).iter_rows()) \
        or "no registered environment"


def _derive_steps(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    t = pl.col("t")
    frame = frame.with_columns(
        # The k-th smallest t of an episode must be k-1: a gap, a repeat or a start other than
        # 0 puts some step out of place (the count is checked against the episode's n_steps).
        pl.when(t.is_not_null() & pl.col("episode_id").is_not_null())
        .then(t == t.rank("ordinal").over("episode_id").cast(pl.Int64) - 1)
        .alias("_t_in_sequence"),
        pl.col("reward").is_finite().alias("_reward_finite"),
        (~pl.col("valid") | (pl.col("error").fill_null("") == "")).alias("_error_empty_when_valid"),
    )
    if "episodes" in refs:
        episodes = refs["episodes"]
        known = episodes.get_column("episode_id").drop_nulls().unique()
        env_of = (episodes.select("episode_id", "env").drop_nulls("episode_id")
                  .unique("episode_id", keep="first").join(_ranges(episodes), on="env", how="left"))
        frame = (frame.with_columns(pl.col("episode_id").is_in(known.implode()).alias("_episode_known"))
                 .join(env_of.drop("env"), on="episode_id", how="left", maintain_order="left"))
        reward = pl.col("reward")
        # A non-finite reward is _reward_finite's to report; an unknown environment has no range.
        frame = frame.with_columns(
            pl.when(reward.is_finite())
            .then(reward.is_between(pl.col("_reward_low"), pl.col("_reward_high")))
            .alias("_reward_in_range")).drop("_reward_low", "_reward_high")
    return frame


STEPS = Suite(
    name="steps",
    id_columns=("episode_id", "t"),
    schema=STEP_SCHEMA,
    expectations=_step_expectations,
    derive=_derive_steps,
    description="One row per step: (episode_id, t) unique and numbered 0..n-1 in each episode, finite "
                "rewards within the environment's range, no orphan steps.",
)


# ---------------------------------------------------------------------------------------
# draft attempts (distillery tasks draft)
# ---------------------------------------------------------------------------------------


def _draft_attempt_expectations(refs: Refs) -> list:
    return [
        *not_null("attempt_id", "run_id", "env", "family", "hint", "draft_no", "round", "verdict",
                  "reasons", "reason_kinds", "tokens_in", "tokens_out", "cost_usd", "wall_s"),
        *unique("attempt_id"),
        *unique("run_id", "draft_no", "round"),
        *one_of("verdict", DRAFT_VERDICTS),
        *at_least(0, "draft_no", "round", "tokens_in", "tokens_out", "cost_usd", "wall_s"),
        *holds("_kinds_known", f"every reason kind is one of {', '.join(DRAFT_REASON_KINDS)}",
               show=("reason_kinds",)),
        *holds("_verdict_consistent", "kept: no reasons and a task_id; rejected or error: one kind "
               "per reason, at least one, and no task_id", show=("verdict", "reasons", "reason_kinds", "task_id")),
        *holds("_draft_json_ok", "draft_json is empty (no JSON found) or a JSON object", show=("draft_json",)),
    ]


def _derive_draft_attempts(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    known, kinds_ok, consistent = set(DRAFT_REASON_KINDS), [], []
    for verdict, reasons, kinds, task_id in frame.select(
            "verdict", "reasons", "reason_kinds", "task_id").iter_rows():
        kinds_ok.append(None if kinds is None else all(k in known for k in kinds))
        if verdict is None or reasons is None or kinds is None:
            consistent.append(None)
        elif verdict == "kept":
            consistent.append(not reasons and not kinds and bool(task_id))
        else:
            consistent.append(bool(reasons) and len(reasons) == len(kinds) and not task_id)
    json_ok = [None if text is None else (text == "" or _json_is(text, dict)) for text in frame["draft_json"]]
    return frame.with_columns(pl.Series("_kinds_known", kinds_ok, dtype=pl.Boolean),
                              pl.Series("_verdict_consistent", consistent, dtype=pl.Boolean),
                              pl.Series("_draft_json_ok", json_ok, dtype=pl.Boolean))


DRAFT_ATTEMPTS = Suite(
    name="draft_attempts",
    id_columns=("attempt_id",),
    schema=DRAFT_ATTEMPT_SCHEMA,
    expectations=_draft_attempt_expectations,
    derive=_derive_draft_attempts,
    description="Every drafting attempt: unique ids, known verdicts and reason kinds, a kept draft "
                "with a task and no reasons, a rejection with its reasons.",
)


SUITES: dict[str, Suite] = {s.name: s for s in (TASKS, EPISODES, STEPS, DRAFT_ATTEMPTS)}

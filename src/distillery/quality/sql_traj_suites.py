"""The SQL track's trajectory contract: the per-episode outcome table beside the gated
episodes and steps (the `episodes` and `steps` suites apply to SQL trajectories unchanged).

`sql_outcomes.parquet` holds, per episode, what the environment measured when the episode
was replayed (`train.sql_rl.sql_outcomes`): execution, schema F1 and recall, the proposal
step, hallucinated identifiers, protocol violations and how much of the schema the policy
explored. Its schema lives here, not in `types.py`, so that the modules every other stage
depends on stay unchanged (the same reason `sql_suites.py` is a module of its own).
"""

from __future__ import annotations

import polars as pl

from distillery.quality.suites import (
    Refs,
    Suite,
    a_at_least_b,
    at_least,
    between,
    holds,
    not_null,
    unique,
)

SQL_OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "episode_id": pl.String, "task_id": pl.String, "group": pl.String, "policy": pl.String,
    "submitted": pl.Boolean, "ran": pl.Boolean, "correct": pl.Boolean, "execution_reward": pl.Float64,
    "format_ok": pl.Boolean, "schema_reward": pl.Float64, "table_f1": pl.Float64, "column_f1": pl.Float64,
    "table_recall": pl.Float64, "column_recall": pl.Float64, "proposal_step": pl.Int64,
    "n_hallucinated": pl.Int64, "n_violations": pl.Int64, "n_steps": pl.Int64, "n_explore_calls": pl.Int64,
    "n_tables_described": pl.Int64, "n_tables": pl.Int64, "described_share": pl.Float64,
    "replay_matches": pl.Boolean,
}


def _outcome_expectations(refs: Refs) -> list:
    checks = [
        *not_null(*SQL_OUTCOME_SCHEMA),
        *unique("episode_id"),
        *between("execution_reward", 0, 1),
        *between("schema_reward", 0, 1),
        *between("described_share", 0, 1),
        *at_least(-1, "proposal_step"),
        *at_least(0, "n_hallucinated", "n_violations", "n_steps", "n_explore_calls", "n_tables_described"),
        *a_at_least_b("n_steps", "n_explore_calls"),
        *a_at_least_b("n_tables", "n_tables_described"),
        *holds("replay_matches", "replaying the episode's actions gives the recorded validity at every step",
               show=("episode_id",)),
        *holds("_correct_implies_ran", "a correct answer was submitted and ran", show=("correct", "ran", "submitted")),
        *holds("_reward_matches", "execution_reward is 1.0 when correct, 0.2 when it only ran, else 0",
               show=("execution_reward", "correct", "ran")),
        *holds("_proposal_before_end", "the proposal step lies inside the episode", show=("proposal_step", "n_steps")),
    ]
    if "episodes" in refs:
        checks += [*holds("_episode_known", "episode_id is one of the gated run's episodes", show=("episode_id",)),
                   *holds("_correct_is_success", "correct agrees with the episode's success", show=("correct",))]
    return checks


def _derive_outcomes(frame: pl.DataFrame, refs: Refs) -> pl.DataFrame:
    frame = frame.with_columns(
        (~pl.col("correct") | (pl.col("ran") & pl.col("submitted"))).alias("_correct_implies_ran"),
        (pl.col("execution_reward") == pl.when(pl.col("correct")).then(1.0)
         .when(pl.col("ran")).then(0.2).otherwise(0.0)).alias("_reward_matches"),
        (pl.col("proposal_step") < pl.col("n_steps")).alias("_proposal_before_end"),
    )
    if "episodes" in refs:
        eps = refs["episodes"].select("episode_id", pl.col("success").alias("_success"))
        frame = frame.join(eps, on="episode_id", how="left", maintain_order="left").with_columns(
            pl.col("_success").is_not_null().alias("_episode_known"),
            (pl.col("correct") == pl.col("_success")).alias("_correct_is_success"),
        ).drop("_success")
    return frame


SQL_OUTCOMES = Suite(
    name="sql_outcomes",
    id_columns=("episode_id",),
    schema=SQL_OUTCOME_SCHEMA,
    expectations=_outcome_expectations,
    derive=_derive_outcomes,
    description="One row per SQL episode, replayed: execution and schema scores in range, counts that add up, "
                "the replay agrees with the recorded steps and the episode's success.",
)

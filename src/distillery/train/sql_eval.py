"""Running policies on SQL task sets and summarising what the environment measured.

    traj, outcomes = run_sql_policy(spec, tasks, track, batch_size=64, max_steps=12)
    summary = summarise(outcomes)        # execution accuracy, schema recall, hallucination rate, ...

Policies are named like everywhere else (`agents.base.PolicySpec`): the oracle replays each
task's reference (rewritten for the track's options, `train.sql_rl.adapt_tasks`), the
random policy draws calls from the SQL tools, `hf` runs a trained model directory and
`openai` any OpenAI-compatible endpoint, so a user benchmarks their own model by naming it
under `policies:` in params.yaml and in `sql_evaluate.policies`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from distillery.agents.base import PolicySpec
from distillery.config import ExecutorConfig, _f
from distillery.rollout import RolloutConfig, Trajectories, run_episodes
from distillery.train.sql_rl import SqlTrackConfig, spread_slice, sql_outcomes
from distillery.types import Task


@dataclass
class SqlCollectConfig:
    """`sql_collect` stage: the teachers' trajectories on the learning databases."""

    section: ClassVar[str] = "sql_collect"

    policies: list[str] = _f(["oracle", "random"], "entries of `policies:`, one `sql_collect@<name>` stage each")
    train_tasks: int = _f(1200, "train-split tasks (outside the validation databases), spread over databases "
                                "and templates; 0 = all")
    k: int = _f(1, "episodes per task")
    seed: int = _f(0, "rollout seed")
    batch_size: int = _f(64, "episodes advanced together")
    workers: int = _f(2, "processes the episodes are sharded over (the episodes are the same for any number)")

    def __post_init__(self) -> None:
        if self.k < 1 or self.train_tasks < 0 or self.batch_size < 1 or self.workers < 1:
            raise ValueError("sql_collect.k, batch_size and workers must be >= 1 and train_tasks >= 0")


@dataclass
class SqlEvaluateConfig:
    """`sql_evaluate` stage: the policies on held-out databases, real databases and the
    schema-size sets, under the track's options."""

    section: ClassVar[str] = "sql_evaluate"

    policies: list[str] = _f(["oracle", "random"], "entries of `policies:` (oracle, random, any hf or openai "
                                                   "entry such as `served`) evaluated beside the students")
    models: list[str] = _f(["sql_warmup", "sql_rl"], "trained students (models/<name>), greedy")
    heldout_tasks: int = _f(120, "tasks of the held-out train databases (unseen databases of the training domains "
                                 "and styles), spread; 0 = all")
    test_tasks: int = _f(120, "test-split tasks (unseen databases, domains and naming styles), spread; 0 = all")
    real_tasks_per_db: int = _f(20, "real-database tasks per database (Chinook, enterprise Chinook, Lahman); 0 = all")
    transfer: bool = _f(True, "evaluate on the real databases")
    scale: bool = _f(True, "evaluate the final student on the schema-size sets (data/sql/scale)")
    max_steps: int = _f(12, "turn cap of every episode (the oracle needs up to 11)")
    max_new_tokens: int = _f(160, "cap on one action's tokens (model policies)")
    batch_size: int = _f(64, "episodes advanced together")
    workers: int = _f(2, "processes the oracle's and the random policy's episodes are sharded over (a model "
                         "policy runs in one process: it batches)")
    seed: int = _f(0, "rollout seed")

    def __post_init__(self) -> None:
        if self.max_steps < 4 or self.batch_size < 1 or self.workers < 1 or min(
                self.heldout_tasks, self.test_tasks, self.real_tasks_per_db) < 0:
            raise ValueError("sql_evaluate.max_steps must be >= 4, batch_size and workers >= 1, task counts >= 0")


@dataclass
class PolicyRun:
    """One policy on one task set: its trajectories and per-episode outcomes."""

    policy: str
    task_set: str
    traj: Trajectories
    outcomes: pl.DataFrame
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# Policies cheap to build in a worker process and independent of how episodes are batched
# (the oracle replays, the random policy seeds per step): these shard over processes.
SHARDABLE = ("oracle", "random")


def run_sql_policy(spec: PolicySpec, tasks: Sequence[Task], track: SqlTrackConfig, *, batch_size: int = 64,
                   max_steps: int | None = None, seed: int = 0, label: str = "",
                   workers: int = 1) -> tuple[Trajectories, pl.DataFrame]:
    """K = 1 episode of every task with the policy `spec`, under the track's options; the
    episodes are labelled `label` (default: the spec's name), and replayed for outcomes.
    The oracle's and the random policy's episodes run on `workers` processes."""
    kwargs = track.env_kwargs()
    rcfg = RolloutConfig(k=1, seed=seed, batch_size=batch_size, max_steps=max_steps, env_kwargs=kwargs)
    if label:
        spec = PolicySpec(spec.kind, spec.kwargs, label)
    pool = workers > 1 and spec.kind in SHARDABLE and len(tasks) > batch_size
    executor = ExecutorConfig(kind="process", workers=workers) if pool else None
    traj = run_episodes(list(tasks), spec, rcfg, executor, progress=False)
    return traj, sql_outcomes({t.task_id: t for t in tasks}, traj, kwargs)


def pick_real(tasks: Sequence[Task], per_db: int) -> list[Task]:
    """`per_db` tasks of each real database (spread over its questions); 0 = all."""
    out: list[Task] = []
    for db in sorted({t.initial_state.get("db_id", "") for t in tasks}):
        mine = [t for t in tasks if t.initial_state.get("db_id", "") == db]
        out += spread_slice(mine, per_db) if per_db else sorted(mine, key=lambda t: t.task_id)
    return out


def _mean(frame: pl.DataFrame, expr: pl.Expr) -> float:
    if frame.height == 0:
        return math.nan
    v = frame.select(expr.cast(pl.Float64).mean()).item()
    return float(v) if v is not None else math.nan


def summarise(outcomes: pl.DataFrame) -> dict[str, float]:
    """What one policy did on one task set (means over episodes).

    accuracy: test-suite execution accuracy; ran: the submitted SQL executed; table_recall /
    column_recall / schema_f1 (0.4 table F1 + 0.6 column F1) of the last proposal (0 without
    one); proposal_rate; hallucination_rate: the share of episodes with at least one
    hallucinated identifier (one that does not exist, or that no tool had shown when the
    policy used it); violation_rate; explore_calls and steps per episode; described_share:
    the share of the database's tables the policy described."""
    o = outcomes
    return {
        "n": float(o.height),
        "accuracy": _mean(o, pl.col("correct")),
        "ran": _mean(o, pl.col("ran")),
        "submitted": _mean(o, pl.col("submitted")),
        "schema_f1": _mean(o, pl.col("schema_reward")),
        "table_recall": _mean(o, pl.col("table_recall")),
        "column_recall": _mean(o, pl.col("column_recall")),
        "proposal_rate": _mean(o, pl.col("proposal_step") >= 0),
        "hallucination_rate": _mean(o, pl.col("n_hallucinated") > 0),
        "violation_rate": _mean(o, pl.col("n_violations") > 0),
        "explore_calls": _mean(o, pl.col("n_explore_calls")),
        "steps": _mean(o, pl.col("n_steps")),
        "described_share": _mean(o, pl.col("described_share")),
        "tables_described": _mean(o, pl.col("n_tables_described")),
    }


def summarise_by(outcomes: pl.DataFrame, tasks: Mapping[str, Task], key: str) -> dict[str, dict[str, float]]:
    """`summarise` per value of a task's `initial_state[key]` (db_id, size, ...)."""
    vals = [str(tasks[t].initial_state.get(key, "")) for t in outcomes["task_id"].to_list()]
    o = outcomes.with_columns(pl.Series("_k", vals, dtype=pl.String))
    return {k: summarise(o.filter(pl.col("_k") == k).drop("_k")) for k in sorted(set(vals))}

"""SQL environment steps per second on one core, printed beside STAGE's in the same run.

Three SQL workloads, each for the same wall-clock budget, on generated databases of 200
filler tables (plus the core tables and their decoys):

- tool round trips: search_tables, list_tables, describe_table, search_columns and
  sample_rows calls, the exploration an agent spends most of its steps on;
- execute_sql: the gold query of each task, after its proposal (sqlglot's identifier
  check, then SQLite);
- episodes: reset + every reference step + verify (execution on the main database and
  every sibling), as a rollout runs them.

STAGE's figure is bench/env_throughput.py's (its oracle episodes, reset and verify included).

    python bench/sql_env_throughput.py [--seconds 10] [--tasks data/sql/tasks.parquet]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))       # env_throughput (STAGE's side)

from distillery.envs.actions import format_call  # noqa: E402
from distillery.envs.sql.config import SqlTasksConfig  # noqa: E402
from distillery.envs.sql.env import SqlEnv  # noqa: E402
from distillery.envs.sql.taskset import generate_sql_tasks  # noqa: E402
from distillery.types import Task, tasks_from_frame  # noqa: E402
from env_throughput import stage_steps_per_s  # noqa: E402
from machine import positive_float  # noqa: E402


def sql_tasks(path: str, workdir: str) -> list[Task]:
    if path:
        import polars as pl

        return tasks_from_frame(pl.read_parquet(path))
    cfg = SqlTasksConfig(n_train_dbs=4, n_test_dbs=2, questions_per_db=10, min_fillers=200, max_fillers=200,
                         random_probes=0, min_kept_fraction=0.0)
    return generate_sql_tasks(cfg, workdir).tasks


def _timed_steps(env: SqlEnv, prepared: list[tuple[Task, list[str], list[str]]], seconds: float) -> tuple[float, int]:
    """Steps per second of the `timed` actions, each pass resetting and replaying `setup`
    first (untimed)."""
    spent, steps = 0.0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for task, setup, timed in prepared:
            env.reset(task)
            for a in setup:
                env.step(a)
            for a in timed:
                t0 = time.perf_counter()
                res = env.step(a)
                spent += time.perf_counter() - t0
                assert res.valid, (a, res.observation)
                steps += 1
    return steps / spent, steps


def tool_round_trips(env: SqlEnv, tasks: list[Task], seconds: float) -> tuple[float, int]:
    prepared = []
    for task in tasks:
        table = task.checks[1]["tables"][0]
        word = task.reference_solution[0].args["query"]
        prepared.append((task, [], [f'search_tables(query="{word}")', "list_tables(page=2)",
                                    f'describe_table(table="{table}")', 'search_columns(query="id")',
                                    f'sample_rows(table="{table}", n=3)']))
    return _timed_steps(env, prepared, seconds)


def execute_sql(env: SqlEnv, tasks: list[Task], seconds: float) -> tuple[float, int]:
    prepared = []
    for task in tasks:
        calls = task.reference_solution
        proposal = [c.tool for c in calls].index("propose_schema")
        prepared.append((task, [format_call(c) for c in calls[: proposal + 1]], [format_call(calls[-2])]))
    return _timed_steps(env, prepared, seconds)


def episodes(env: SqlEnv, tasks: list[Task], seconds: float) -> tuple[float, int]:
    actions = [[format_call(c) for c in t.reference_solution] for t in tasks]
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for task, acts in zip(tasks, actions, strict=True):
            env.reset(task)
            for a in acts:
                env.step(a)
            assert env.verify().success, task.task_id
            steps += len(acts)
    return steps / (time.perf_counter() - t0), steps


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=positive_float, default=10.0, help="wall-clock budget per workload")
    ap.add_argument("--tasks", default="", help="a tasks.parquet of SQL tasks (default: generate 6 databases)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})   # one core, like env_throughput
    with tempfile.TemporaryDirectory() as d:
        tasks = sql_tasks(args.tasks, d)
        env = SqlEnv()
        try:
            env.reset(tasks[0])
            n_tables = len(env.meta.tables)
            tools, t_steps = tool_round_trips(env, tasks, args.seconds)
            execs, e_steps = execute_sql(env, tasks, args.seconds)
            eps, ep_steps = episodes(env, tasks, args.seconds)
        finally:
            env.close()
    stage, s_steps, s_eps = stage_steps_per_s(args.seconds)
    print(f"SQL tools      {tools:8.0f} steps/s  ({t_steps} metadata tool calls on {len(tasks)} tasks, "
          f"~{n_tables} tables per database, resets not timed)")
    print(f"SQL execute    {execs:8.0f} steps/s  ({e_steps} execute_sql of gold queries after a proposal)")
    print(f"SQL episodes   {eps:8.0f} steps/s  ({ep_steps} steps, reset + reference steps + verify on main and siblings)")
    print(f"STAGE          {stage:8.0f} steps/s  ({s_steps} steps, {s_eps} episodes, reset+verify included, 1 core)")
    print(f"ratio          SQL episodes / STAGE = {eps / stage:.2f}x; SQL tools / STAGE = {tools / stage:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures of the SQL environment's tests: one small generated task set per session,
and a loop that plays a policy in an environment (no registry: the environment is built
from its module)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from distillery.agents.random import RandomPolicy
from distillery.envs.actions import format_call
from distillery.envs.base import ToolSpec
from distillery.envs.sql.config import SqlTasksConfig
from distillery.envs.sql.env import SqlEnv
from distillery.envs.sql.taskset import SqlTaskSet, generate_sql_tasks
from distillery.envs.sql.tools import TOOL_SPECS
from distillery.types import Context, Task, Turn

SMALL = dict(n_train_dbs=4, n_test_dbs=2, questions_per_db=6, min_fillers=100, max_fillers=130,
             random_probes=0, min_kept_fraction=0.5)


@pytest.fixture(scope="session")
def small_set(tmp_path_factory) -> SqlTaskSet:
    out = tmp_path_factory.mktemp("sqlset")
    return generate_sql_tasks(SqlTasksConfig(**SMALL), out)


@pytest.fixture
def env():
    e = SqlEnv(max_vm_steps=2_000_000, time_limit_s=20.0)
    yield e
    e.close()


class SqlRandomPolicy(RandomPolicy):
    """The random policy, unchanged, with the SQL tools given directly instead of looked up
    by name (the `sql` entry point is only known once the package is reinstalled)."""

    @staticmethod
    def _specs(env: str) -> list[ToolSpec]:
        return [s for s in TOOL_SPECS if s.name != "finish"]


@dataclass
class Played:
    success: bool
    score: float
    steps: int


def play(env: SqlEnv, task: Task, policy, sample: int = 0) -> Played:
    """One episode of `policy` (oracle replay when None), like the rollout engine runs it."""
    obs = env.reset(task)
    history: list[Turn] = []
    for t in range(task.max_steps):
        if policy is None:
            if t >= len(task.reference_solution):
                break
            action = format_call(task.reference_solution[t])
        else:
            ctx = Context(f"{task.task_id}:k{sample}", task, t, obs, list(history), seed=sample)
            action = policy.act([ctx])[0].text
        res = env.step(action)
        history.append(Turn(obs, action))
        obs = res.observation
        if res.done:
            break
    v = env.verify()
    return Played(v.success, v.score, len(history))


def db_path(task: Task) -> Path:
    return Path(task.initial_state["db"])

"""Shared by the mining tests: a real OpenAI-protocol chat server on 127.0.0.1, and real
STAGE trajectories to mine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from tests.json_server import JsonServer

from distillery.agents.base import PolicySpec, make_policy
from distillery.config import TasksConfig
from distillery.envs.actions import format_call
from distillery.mining.pool import principle_id
from distillery.rollout import RolloutConfig, Trajectories, make_jobs, run_batch
from distillery.tasks.generate import generate_tasks
from distillery.types import ActionOutput, Context, Experience, Task


@pytest.fixture
def chat_server() -> Iterator[Callable[[Callable[[dict], tuple[int, dict]]], tuple[str, list[dict]]]]:
    servers: list[JsonServer] = []

    def start(script: Callable[[dict], tuple[int, dict]]) -> tuple[str, list[dict]]:
        seen: list[dict] = []

        def answer(headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
            seen.append(body)
            return (*script(body), {})

        servers.append(JsonServer(answer))
        return servers[-1].base_url, seen

    yield start
    for srv in servers:
        srv.close()


def chat_reply(content: str) -> tuple[int, dict]:
    return 200, {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


# ---------------------------------------------------------------------------------------
# Real STAGE trajectories: tasks of one user, run by the oracle or by a user of other habits
# ---------------------------------------------------------------------------------------

# A user of the default profile who has not learnt alex's ways: the reference solution with
# the default profile's habits in place of alex's preferences.
HABITS = [("paperwork/bills", "finance/invoices"), ("Cheers, Alex", "Best, Sam"),
          ("inbox-files", "documents/attachments"), ('"newsletters"', '"reading"'), ("duration=45", "duration=30")]


class HabitPolicy:
    """Replays the reference solution; on the samples `habit(episode_id)` picks, with the
    default profile's habits, so those episodes fail the checks."""

    name = "habit"
    model = "-"

    def __init__(self, habit: Callable[[str], bool]) -> None:
        self.habit = habit

    def act(self, contexts: list[Context]) -> list[ActionOutput]:
        out = []
        for ctx in contexts:
            ref = ctx.task.reference_solution
            text = format_call(ref[ctx.t]) if ctx.t < len(ref) else "finish()"
            if self.habit(ctx.episode_id):
                for mine, theirs in HABITS:
                    text = text.replace(mine, theirs)
            out.append(ActionOutput(text=text))
        return out


def make_tasks(profile: str, n: int, families: list[str] | None = None) -> list[Task]:
    cfg = TasksConfig(n_train_per_family=n, n_test_per_family=0, random_probes=0, train_profiles=[profile],
                      families=families or [])
    return generate_tasks(cfg, progress=False).tasks


def oracle_run(tasks: list[Task], k: int = 1) -> Trajectories:
    cfg = RolloutConfig(k=k)
    return run_batch(make_policy(PolicySpec(kind="oracle")), make_jobs(tasks, "oracle", cfg), cfg)


def habit_run(tasks: list[Task], habit: Callable[[str], bool], k: int = 1) -> Trajectories:
    cfg = RolloutConfig(k=k)
    return run_batch(HabitPolicy(habit), make_jobs(tasks, "habit", cfg), cfg)


def blind(tasks: list[Task]) -> dict[str, Task]:
    """The tasks as a summariser may see them: no preferences, no checks, no reference
    solution (the trajectories were already run with them)."""
    return {t.task_id: replace(t, preferences=[], checks=[], reference_solution=[]) for t in tasks}


def rule(text: str, counter: int = 2, **kw: Any) -> Experience:
    return Experience(exp_id=principle_id(text, kw.get("family", ""), kw.get("condition", "")), kind="principle",
                      text=text, counter=counter, status="active", **kw)


@pytest.fixture(scope="module")
def alex() -> tuple[dict[str, Task], Trajectories]:
    """Four tasks of every family for the user alex, all solved by the oracle."""
    tasks = make_tasks("alex", 4)
    traj = oracle_run(tasks)
    assert traj.episodes["success"].all()
    return blind(tasks), traj

"""An environment's own speed: steps per second replaying its tasks' reference solutions.

Every episode is reset + each reference step as a tool call + verify, so the figure counts
what running an episode costs the environment (building the state, the game, the checks),
with no policy in the loop. The cross-environment table (`stages/env_table.py`) measures
every environment with it in one run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from distillery.envs.actions import format_call
from distillery.envs.base import Environment
from distillery.types import Task


@dataclass(frozen=True)
class Throughput:
    steps_per_s: float
    steps: int
    episodes: int
    seconds: float


def replay_throughput(env: Environment, tasks: Sequence[Task], seconds: float) -> Throughput:
    """Replay each task's reference solution in turn, again and again, for about `seconds`
    (at least one pass). A replay that does not win is an error naming the task: the figure
    would not be the environment's speed on its own tasks. The environment is left open."""
    if not tasks:
        raise ValueError("replay_throughput: no tasks to replay")
    actions = [[format_call(c) for c in t.reference_solution] for t in tasks]
    steps = episodes = 0
    t0 = time.perf_counter()
    while True:
        for task, acts in zip(tasks, actions, strict=True):
            env.reset(task)
            for a in acts:
                env.step(a)
            if not env.verify().success:
                raise ValueError(f"replay_throughput: {task.task_id}'s reference solution did not win in {task.env}")
            steps += len(acts)
            episodes += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return Throughput(steps / elapsed, steps, episodes, elapsed)

"""Small, consistent artifacts for the gate tests, built with the schemas from types.py."""

from __future__ import annotations

import polars as pl
import pytest

from distillery.types import (
    Episode,
    Step,
    Task,
    ToolCall,
    episodes_to_frame,
    steps_to_frame,
    tasks_to_frame,
)


def make_tasks(n: int = 4) -> pl.DataFrame:
    return tasks_to_frame([
        Task(task_id=f"task-{i}", family="files", split=("train", "test")[i % 2], profile="p0",
             hint="archive invoices", instruction=f"Move invoice {i} to archive/.",
             initial_state={"files": {f"inv{i}.pdf": "x"}},
             reference_solution=[ToolCall("move_file", {"src": f"inv{i}.pdf", "dst": "archive/"})],
             checks=[{"type": "file_exists", "path": f"archive/inv{i}.pdf"}], seed=i)
        for i in range(n)
    ])


def make_trajectories(n_episodes: int = 6, steps_per_episode: int = 3
                      ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Episodes `ep-000`, ... (even ones succeed with score 1) and their steps."""
    episodes, steps = [], []
    for i in range(n_episodes):
        eid, success = f"ep-{i:03d}", i % 2 == 0
        episodes.append(Episode(
            episode_id=eid, env="stage", task_id=f"task-{i % 3}", family="files", split="train",
            profile="p0", policy="oracle", model="", iteration=0, group=f"task-{i % 3}",
            sample=i, seed=i, success=success, score=1.0 if success else 0.5,
            n_steps=steps_per_episode, invalid_actions=0 if success else 1, tokens_in=100 + i,
            tokens_out=20, cost_usd=0.001, wall_s=0.5, finished=True,
            failure_mode="none" if success else "incomplete",
            failed_checks=[] if success else ["file_exists(path=archive/x.pdf)"]))
        for t in range(steps_per_episode):
            valid = success or t > 0
            steps.append(Step(
                episode_id=eid, t=t, observation=f"obs {t}", action_text="ls()", tool="ls",
                args_json="{}", valid=valid, error="" if valid else "unknown tool 'lss'",
                feedback="ok", reward=1.0 if success and t == steps_per_episode - 1 else 0.0,
                state_hash=f"h{t}", tokens_in=10, tokens_out=2))
    return episodes_to_frame(episodes), steps_to_frame(steps)


@pytest.fixture
def tasks() -> pl.DataFrame:
    return make_tasks()


@pytest.fixture
def trajectories() -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_trajectories()


@pytest.fixture(name="make_trajectories")
def _make_trajectories():
    """The factory itself, for tests that need a bigger or odd-shaped run."""
    return make_trajectories

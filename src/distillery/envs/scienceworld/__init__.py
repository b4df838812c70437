"""ScienceWorld (Wang et al. 2022) behind the environment protocol, for evaluation only: a
small fixed set of task variations (families.py), its action templates as tools with valid
actions on demand (commands.py), the task's score and subgoals as checks and its gold
action sequence as the reference solution (env.py), at most four simulators (JVMs of about
1.35 GB) per worker process (engine.py).

`ENV` is what the `scienceworld` entry point of `distillery.envs` registers. Nothing here
imports `scienceworld` (an optional extra, `pip install 'distillery[scienceworld]'`, Java 17).
"""

from __future__ import annotations

from typing import Any

from distillery.envs.base import EnvSpec
from distillery.envs.scienceworld.commands import TOOL_SPECS
from distillery.envs.scienceworld.engine import MAX_INSTANCES
from distillery.envs.scienceworld.env import ScienceWorldEnv
from distillery.envs.scienceworld.families import TASKS
from distillery.envs.scienceworld.families import check_profile as _fold_of

DESCRIPTION = ("You carry out a science task in a simulated house and its surroundings: each observation says "
               "what you see or what happened; act with one action per turn through the tools.")


def state_texts(state: dict[str, Any]) -> list[str]:
    return [str(state.get("task", "")), str(state.get("variation", ""))]


def check_profile(name: str) -> None:
    _fold_of(name)


def vocabulary_text() -> str:
    return "\n".join(t.hint for t in TASKS.values())


ENV = EnvSpec(
    name="scienceworld", factory=ScienceWorldEnv, tools=TOOL_SPECS, description=DESCRIPTION,
    state_texts=state_texts, vocabulary=vocabulary_text, check_profile=check_profile,
    reward_range=(0.0, 1.0), requires=("scienceworld",), max_instances=MAX_INSTANCES,
)

__all__ = ["ENV", "MAX_INSTANCES", "TOOL_SPECS", "ScienceWorldEnv"]

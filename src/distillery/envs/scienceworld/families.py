"""ScienceWorld's task families (evaluation only): a small fixed set of task variations.

Each family is one ScienceWorld task whose gold paths are short enough for a step budget and
replay to completion (power-component's do not always: its circuit sometimes stays unpowered);
its tasks are the first `N_VARIATIONS` variations of the fold a profile names (`default` =
the test fold, `dev`, `train`). A draft picks one of them with the task's random
generator and keeps it as data: the task, the variation (the initial state), the
simulator's task description (the instruction), its gold action sequence as tool calls
(the reference solution) and the checks `completed` and `not_failed` (the environment adds
one per subgoal when it verifies).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from distillery.envs.base import Draft, Family
from distillery.envs.scienceworld import engine
from distillery.envs.scienceworld.commands import from_command

ENV = "scienceworld"
N_VARIATIONS = 5
FOLDS = {"default": "test", "test": "test", "dev": "dev", "train": "train"}


@dataclass(frozen=True)
class SwTask:
    name: str                  # the family: sw_<task>
    task: str                  # ScienceWorld's task name
    hint: str
    areas: tuple[str, ...] = ()


TASKS: dict[str, SwTask] = {t.name: t for t in (
    SwTask("sw_find_living_thing", "find-living-thing", "find a living thing, focus on it and move it to the box",
           ("biology", "navigation")),
    SwTask("sw_find_non_living_thing", "find-non-living-thing",
           "find a non-living thing, focus on it and move it to the box", ("navigation",)),
    SwTask("sw_lifespan_longest", "lifespan-longest-lived", "focus on the animal that lives longest", ("biology",)),
    SwTask("sw_find_plant", "find-plant", "find a plant, focus on it and move it to the box", ("biology", "navigation")),
)}


def check_profile(profile: str) -> str:
    if profile not in FOLDS:
        raise ValueError(f"unknown ScienceWorld profile {profile!r}: one of {', '.join(FOLDS)} "
                         "(the fold whose variations are drawn; default = test)")
    return FOLDS[profile]


def until_completed(sim: object, task: str, variation: int, gold: list[str]) -> list[str]:
    """The gold path cut where the task is completed (some go on after it); as it is if it
    never completes (the task's validation then rejects it)."""
    engine.load(sim, task, variation)
    server = sim.server  # type: ignore[attr-defined]
    server.step("look around")
    for i, c in enumerate(gold):
        server.step(c)
        if server.getScore() >= 1.0 or server.getScore() < 0:
            return gold[: i + 1]
    return gold


def draft_task(t: SwTask, rng: random.Random, profile: str) -> Draft:
    """One task variation of `t` under `profile`; a pure function of (rng state, profile)."""
    fold = check_profile(profile)
    with engine.borrowed() as sim:
        variation = rng.choice(engine.variations(sim, t.task, fold)[:N_VARIATIONS])
        gold = engine.gold_path(sim, t.task, variation)
        engine.load(sim, t.task, variation)
        desc = str(sim.server.getTaskDescription())
        gold = until_completed(sim, t.task, variation, gold)
    state = {"task": t.task, "variation": variation, "simplification": "", "fold": fold}
    return Draft(instruction=re.sub(r"\s+", " ", desc).strip(), state=state,
                 solution=[from_command(c) for c in gold],
                 checks=[{"type": "completed"}, {"type": "not_failed"}])


def _family(t: SwTask) -> Family:
    return Family(name=t.name, env=ENV, hint=t.hint, draft=lambda rng, profile, t=t: draft_task(t, rng, profile),
                  areas=t.areas)


FAMILIES: dict[str, Family] = {name: _family(t) for name, t in TASKS.items()}

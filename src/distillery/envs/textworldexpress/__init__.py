"""TextWorldExpress (Jansen and Côté 2022) behind the environment protocol: eight fast text
games (coin, map reader, cooking, TextWorld Commonsense, arithmetic, sorting, Simon says,
pecking order) as task families, game settings (more rooms, doors, distractors, seed folds)
as profiles, verb templates as tools, won-and-not-lost as checks, gold paths as reference
solutions. See env.py, games.py, families.py, phrasebook.py.

`ENV` is what the `textworldexpress` entry point of `distillery.envs` registers. Nothing here
imports `textworld_express` (an optional extra, `pip install 'distillery[textworld]'`): the
engine starts on first use (`engine.py`).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from typing import Any

from distillery.envs.base import EnvSpec
from distillery.envs.textworldexpress.commands import TOOL_SPECS
from distillery.envs.textworldexpress.env import TwxEnv
from distillery.envs.textworldexpress.games import GAMES, KNOBS, parse_setting
from distillery.envs.textworldexpress.phrasebook import PHRASEBOOK

DESCRIPTION = ("You play a text game: each observation describes where you are and what happened; "
               "act with one game command per turn through the tools.")


def state_texts(state: dict[str, Any]) -> list[str]:
    """A task's state is a game's coordinates, not text a model reads: the game and setting."""
    return [str(state.get("game", "")), str(state.get("params", ""))]


def check_profile(name: str) -> None:
    parse_setting(name)


@functools.cache
def vocabulary_text() -> str:
    """Words a held-out game can show that training games may not: TWC's objects and places of
    every fold, the cooking world's ingredients (from the package's data, when installed)."""
    words = ["north south east west", " ".join(KNOBS), *(g.hint for g in GAMES.values()),
             *(r for g in GAMES.values() for r in g.mechanics)]
    try:
        files = importlib.resources.files("textworld_express")
    except ModuleNotFoundError:
        return "\n".join(words)
    for name in ("twc_objects.folds.json", "cooking_world.json"):
        try:
            data = json.loads((files / name).read_text())
        except (OSError, ValueError):
            continue
        words.append(" ".join(sorted(_strings(data))))
    return "\n".join(words)


def _strings(obj: Any, depth: int = 0) -> set[str]:
    if isinstance(obj, str):
        return {obj} if len(obj) <= 40 else set()
    if depth > 6:
        return set()
    if isinstance(obj, dict):
        return {s for k, v in obj.items() for s in _strings(k, depth + 1) | _strings(v, depth + 1)}
    if isinstance(obj, list):
        return {s for v in obj for s in _strings(v, depth + 1)}
    return set()


ENV = EnvSpec(
    name="textworldexpress", factory=TwxEnv, tools=TOOL_SPECS, description=DESCRIPTION,
    state_texts=state_texts, vocabulary=vocabulary_text, check_profile=check_profile,
    phrasebook=PHRASEBOOK, reward_range=(0.0, 1.0),     # steps carry 0, the last one the episode's score
    requires=("textworld_express",),
)

__all__ = ["ENV", "TOOL_SPECS", "TwxEnv"]

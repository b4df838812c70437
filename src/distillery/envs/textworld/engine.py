"""TextWorld's engine, imported lazily: a generated game started with the information the
adapter reads each step.

`textworld.start` runs the compiled story in jericho (a Z-machine in C) behind TextWorld's
state tracker. The tracker gives, per state, the commands the game admits
(`admissible_commands`), whether the game is won or lost, the score, the facts of the world
(the state hash) and the commands of TextWorld's own plan from here to the goal
(`policy_commands`: what a failed game names as still needed). Only admitted commands
ever reach jericho: it takes raw bytes, and some (a NUL) crash the process.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from distillery.envs.textworld.games import INSTALL_HINT, EngineUnavailable


def infos() -> Any:
    try:
        from textworld import EnvInfos
    except ImportError as e:
        raise EngineUnavailable(INSTALL_HINT) from e
    return EnvInfos(admissible_commands=True, policy_commands=True, won=True, lost=True, score=True,
                    max_score=True, objective=True, facts=True)


def start(path: Path) -> Any:
    """A running game (TextWorld's environment) for the story at `path`."""
    try:
        import textworld
    except ImportError as e:
        raise EngineUnavailable(INSTALL_HINT) from e
    with warnings.catch_warnings():
        # jericho does not know TextWorld's generated stories ("not fully supported"): TextWorld
        # tracks the score and the state itself.
        warnings.simplefilter("ignore")
        return textworld.start(str(path), infos())


def game_data(path: Path) -> dict[str, Any]:
    """The game's description beside the story: objective and walkthrough."""
    data = json.loads(path.with_suffix(".json").read_text())
    meta = data.get("metadata") or {}
    return {"objective": str(data.get("objective") or ""), "walkthrough": [str(c) for c in meta.get("walkthrough") or []]}

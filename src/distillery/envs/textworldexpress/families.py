"""TextWorldExpress's task families: one per game (`games.GAMES`), registered by the
`textworldexpress` entry point of `distillery.families`.

A draft picks a seed of the setting's fold with the task's random generator, has the engine
generate that game with its gold path, and keeps it as data: the game, its parameters, seed
and fold (the initial state), the game's task description (the instruction), the gold path as
tool calls (the reference solution), the checks `won` and `not_lost`, and the game's
mechanics under the setting (the principles). Seeds whose gold path is shorter than the
game's `min_gold` (the goal already in sight) or longer than its `max_gold` are redrawn, as are
those with a command the game does not offer where the path reaches it or that never win; a
gold path that goes on after the game is won is cut there.

The coin game's gold agent explores at random (the same seed gives a different gold path from
one call to the next), so its reference solution is instead the shortest route to the coin,
found by breadth-first search over the game's places (`shortest_route`): the same every time.
"""

from __future__ import annotations

import random
import re
from collections import deque
from typing import Any

from distillery.envs.base import Draft, Family
from distillery.envs.textworldexpress import engine
from distillery.envs.textworldexpress.commands import from_command, normalise
from distillery.envs.textworldexpress.games import GAMES, Game, parse_setting

ENV = "textworldexpress"
MAX_DRAWS = 20                 # seeds tried per draft before the last one is kept as it is
_loaded: dict[int, tuple[str, str]] = {}


def _spaces(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


DIRECTIONS = ("east", "north", "south", "west")      # tie-breaking order of the route search


def _place(info: dict[str, Any]) -> str:
    """The place the agent is in: the first sentence of the game's 'look around'."""
    return str(info.get("look", "")).split(".", 1)[0]


def shortest_route(g: Any, seed: int, fold: str, goal: str, max_places: int = 64) -> list[str] | None:
    """'look around', the fewest moves (opening closed doors on the way) to a place where
    `goal` is a valid command, then `goal`; None if no place reached has it. Deterministic:
    places are expanded breadth-first, directions in `DIRECTIONS` order."""
    start = engine.generate(g, seed, fold, False)
    frontier: deque[tuple[tuple[str, ...], dict[str, Any]]] = deque([((), start)])
    seen = {_place(start)}
    while frontier and len(seen) <= max_places:
        path, info = frontier.popleft()
        valid = set(info.get("validActions") or ())
        if goal in valid:
            return ["look around", *path, goal]
        here = _place(info)
        for d in DIRECTIONS:
            # A closed door still lists its move ("You can't move there, the door is closed."):
            # the move alone first, then with the door opened.
            tries = [(f"move {d}",), (f"open door to {d}", f"move {d}")]
            for steps in tries:
                if not all(c in valid for c in steps):
                    continue
                nxt = _replay(g, seed, fold, path + steps)
                if _place(nxt) != here:
                    if _place(nxt) not in seen:
                        seen.add(_place(nxt))
                        frontier.append((path + steps, nxt))
                    break
    return None


def _until_won(g: Any, seed: int, fold: str, gold: list[str]) -> list[str] | None:
    """The gold path cut where the game is won (some gold paths go on after it); None when
    a gold command is not valid where the path reaches it (the engine's cooking gold agent
    sometimes opens a cupboard the game no longer offers to open) or the path never wins."""
    info = engine.generate(g, seed, fold, False)
    for i, c in enumerate(gold):
        if normalise(c) not in {normalise(str(a)) for a in info.get("validActions") or ()}:
            return None
        info = engine.step(g, c)
        if info.get("tasksuccess"):
            return gold[: i + 1]
    return None


def _replay(g: Any, seed: int, fold: str, commands: tuple[str, ...]) -> dict[str, Any]:
    info = engine.generate(g, seed, fold, False)
    for c in commands:
        info = engine.step(g, c)
    return info


def draft_game(game: Game, rng: random.Random, profile: str) -> Draft:
    """One task of `game` under setting `profile`; a pure function of (rng state, profile)."""
    setting = parse_setting(profile)
    params = game.params_text(setting.knobs)
    g = engine.drafting_game()
    if _loaded.get(id(g)) != (game.engine, params):
        engine.load(g, game.engine, params)
        _loaded[id(g)] = (game.engine, params)
    pool = engine.seeds(setting.fold)
    seed, gold = 0, []
    for _ in range(MAX_DRAWS):
        seed = rng.choice(pool)
        engine.generate(g, seed, setting.fold, True)
        gold = engine.gold_path(g)
        if game.engine == "coin":
            gold = shortest_route(g, seed, setting.fold, "take coin") or gold
        won = _until_won(g, seed, setting.fold, gold)
        if won is not None and game.min_gold <= len(won) <= game.max_gold:
            gold = won
            break
    instruction = _spaces(engine.task_description(g))
    state = {"game": game.name, "engine": game.engine, "params": params, "seed": seed, "fold": setting.fold}
    return Draft(instruction=instruction, state=state, solution=[from_command(c) for c in gold],
                 checks=[{"type": "won"}, {"type": "not_lost"}], preferences=game.principles(setting.knobs))


def _family(game: Game) -> Family:
    return Family(name=game.name, env=ENV, hint=game.hint,
                  draft=lambda rng, profile, g=game: draft_game(g, rng, profile), areas=game.areas)


FAMILIES: dict[str, Family] = {name: _family(g) for name, g in GAMES.items()}

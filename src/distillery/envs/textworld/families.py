"""TextWorld's task families: one per challenge (`games.CHALLENGES`), registered by the
`textworld` entry point of `distillery.families`.

A draft picks a seed of the setting's fold with the task's random generator, has TextWorld
generate that game (or finds it in the cache: `games.ensure_game`), and keeps it as data: the
challenge, its settings and the seed (the initial state), the game's objective (the
instruction), its walkthrough as tool calls (the reference solution), the checks `won` and
`not_lost`, and the challenge's mechanics (the principles). Seeds whose walkthrough is
shorter than the challenge's `min_gold` or longer than its `max_gold`, holds a command the
game does not admit where the walkthrough reaches it, or never wins, are redrawn, as are
seeds TextWorld cannot make a quest from (`QuestGenerationError`); a
walkthrough that goes on after the game is won is cut there.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from distillery.envs.base import Draft, Family
from distillery.envs.textworld import engine
from distillery.envs.textworld.commands import from_command, normalise
from distillery.envs.textworld.games import (
    CHALLENGES,
    Challenge,
    EngineUnavailable,
    check_setting,
    ensure_game,
    seeds,
)

ENV = "textworld"
MAX_DRAWS = 8                  # seeds tried per draft before the last one is kept as it is


def until_won(path: Path, walkthrough: list[str]) -> list[str] | None:
    """The walkthrough cut where the game is won; None when a step is not admitted where the
    walkthrough reaches it, or the walkthrough never wins."""
    env = engine.start(path)
    try:
        state = env.reset()
        if state.won:
            return None
        for i, c in enumerate(walkthrough):
            if normalise(c) not in {normalise(str(a)) for a in state.admissible_commands or ()}:
                return None
            state, _, _ = env.step(c)
            if state.lost:
                return None
            if state.won:
                return walkthrough[: i + 1]
        return None
    finally:
        env.close()


def draft_challenge(ch: Challenge, rng: random.Random, profile: str) -> Draft:
    """One task of challenge `ch` under setting `profile`; a pure function of (rng state, profile)."""
    setting = check_setting(profile)
    settings = ch.settings(setting)
    pool = seeds(setting.fold)
    state: dict = {}
    walk: list[str] = []
    objective = ""
    failures: list[str] = []
    for _ in range(MAX_DRAWS):
        seed = rng.choice(pool)
        candidate = {"challenge": ch.challenge, "settings": settings, "seed": seed, "fold": setting.fold}
        try:
            path = ensure_game(candidate)
        except EngineUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - TextWorld cannot make a quest from this seed: draw another
            failures.append(f"seed {seed}: {type(e).__name__}: {str(e)[:120]}")
            continue
        state = candidate
        data = engine.game_data(path)
        objective, walk = data["objective"], data["walkthrough"]
        won = until_won(path, walk)
        if won is not None and ch.min_gold <= len(won) <= ch.max_gold:
            walk = won
            break
    if not state:
        raise ValueError(f"TextWorld made no game of {ch.challenge} with settings {settings} from {MAX_DRAWS} seeds: "
                         + "; ".join(failures[:3]))
    instruction = re.sub(r"\s+", " ", objective).strip()
    return Draft(instruction=instruction, state=state, solution=[from_command(c) for c in walk],
                 checks=[{"type": "won"}, {"type": "not_lost"}], preferences=list(ch.mechanics))


def _family(ch: Challenge) -> Family:
    return Family(name=ch.name, env=ENV, hint=ch.hint,
                  draft=lambda rng, profile, c=ch: draft_challenge(c, rng, profile), areas=ch.areas)


FAMILIES: dict[str, Family] = {name: _family(c) for name, c in CHALLENGES.items()}

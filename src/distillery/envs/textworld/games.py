"""TextWorld's challenges as task families, game settings as profiles, and the game cache.

A task is data: a challenge (`tw-coin_collector`, `tw-treasure_hunter`, `tw-cooking`,
`tw-simple`: TextWorld's own `tw-make` challenges), its settings and a seed. The game itself
(a compiled `.z8` story and its `.json` description, ~400 KB) is generated from them with
TextWorld's generator (`textworld.challenges.CHALLENGES[...]` + `generator.compile_game`,
what `tw-make <challenge> --seed N` runs) and cached under the games folder, keyed by
(TextWorld's version, challenge, settings, seed). A game missing from the cache — another
machine, a cleaned cache — is generated again from the same data: the same seed gives the
same game (`tests/envs/test_textworld.py` checks it, across processes too).

The games folder is `DISTILLERY_TEXTWORLD_GAMES`, else `~/.cache/distillery/textworld`.
Games are written atomically (generated in a private temp folder, then renamed in: the
description first, so a story that exists always has its description beside it), so
workers generating the same game at once each leave a complete copy.

A *setting* (a task's profile) is knobs joined by '-' optionally ending in a seed fold,
as for TextWorldExpress: `default`, `rooms`, `longer`, `rooms-longer-test`. Knobs change a
challenge's settings (`rooms`: more rooms, `longer`: a longer quest); folds draw seeds from
disjoint ranges (train 0-9,999, dev 10,000-19,999, test 20,000-29,999), and the cooking
challenge also uses its own ingredient split for the fold.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.envs.base import EngineUnavailable
from distillery.envs.textworldexpress.games import FOLDS, Setting, parse_setting

INSTALL_HINT = "TextWorld is not installed: pip install 'distillery[textworld]' (textworld 1.7; builds jericho with gcc)"
GAMES_ENV = "DISTILLERY_TEXTWORLD_GAMES"
KNOBS: tuple[str, ...] = ("rooms", "longer")
SEED_BASE = {"train": 0, "dev": 10_000, "test": 20_000}
SEEDS_PER_FOLD = 10_000




@dataclass(frozen=True)
class Challenge:
    """One TextWorld challenge as a task family: its `tw-make` name, base settings, what each
    knob changes, its mechanics (principles) and the walkthrough lengths its drafts keep."""

    name: str                                   # the family: tw_<challenge>
    challenge: str                              # TextWorld's challenge name (tw-make's subcommand)
    hint: str
    base: Mapping[str, Any] = field(default_factory=dict)
    knobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fold_setting: str = ""                      # the settings key a fold sets (cooking: its split)
    mechanics: tuple[str, ...] = ()
    min_gold: int = 2
    max_gold: int = 20
    areas: tuple[str, ...] = ()

    def settings(self, setting: Setting) -> dict[str, Any]:
        out = dict(self.base)
        for k in setting.knobs:
            out.update(self.knobs.get(k, {}))
        if self.fold_setting == "split":
            out["split"] = {"train": "train", "dev": "valid", "test": "test"}[setting.fold]
        elif self.fold_setting == "test":
            out["test"] = setting.fold == "test"
        return out


CHALLENGES: dict[str, Challenge] = {c.name: c for c in (
    Challenge("tw_coin", "tw-coin_collector", "follow the directions through the rooms and take the coin",
              base={"level": 3}, knobs={"longer": {"level": 5}, "rooms": {"level": 103}},
              mechanics=("The goal is to take the coin.",), min_gold=3, areas=("navigation",)),
    Challenge("tw_treasure", "tw-treasure_hunter", "find the object the task names and take it",
              base={"level": 5}, knobs={"longer": {"level": 10}, "rooms": {"level": 13}},
              mechanics=("Take the object the task names.",), areas=("navigation", "objects")),
    Challenge("tw_cooking", "tw-cooking", "read the cookbook, gather and prepare the ingredients, cook and eat the meal",
              base={"recipe": 1, "take": 1, "go": 1, "open": True, "cook": True, "cut": True, "recipe_seed": 0},
              knobs={"rooms": {"go": 6}, "longer": {"recipe": 2, "take": 2}}, fold_setting="split",
              mechanics=("Examine the cookbook first.", "When every ingredient is ready, prepare the meal.",
                         "Finish by eating the meal."), max_gold=24, areas=("objects", "recipes")),
    Challenge("tw_simple", "tw-simple", "follow the task's steps: a key, a door, a fridge and a stove",
              base={"rewards": "dense", "goal": "detailed"}, fold_setting="test",
              mechanics=("Open a container before you take from it.",), areas=("objects", "navigation")),
)}


def check_setting(profile: str) -> Setting:
    """The knobs and fold a profile names; ValueError naming what TextWorld allows otherwise."""
    setting = parse_setting(profile)
    bad = [k for k in setting.knobs if k not in KNOBS]
    if bad:
        raise ValueError(f"unknown TextWorld setting {profile!r}: knobs are {', '.join(KNOBS)} (joined by '-', "
                         f"optionally ending in a seed fold: {', '.join(FOLDS)}), not {', '.join(bad)}")
    return setting


def seeds(fold: str) -> range:
    return range(SEED_BASE[fold], SEED_BASE[fold] + SEEDS_PER_FOLD)


def textworld_version() -> str:
    try:
        from textworld.version import __version__
    except ImportError as e:
        raise EngineUnavailable(INSTALL_HINT) from e
    return str(__version__)


def games_dir(root: str | os.PathLike[str] | None = None) -> Path:
    return Path(root or os.environ.get(GAMES_ENV) or Path.home() / ".cache" / "distillery" / "textworld")


def game_key(challenge: str, settings: Mapping[str, Any], seed: int) -> str:
    """The cache key of a game: TextWorld's version, the challenge, its settings and the seed."""
    blob = json.dumps([textworld_version(), challenge, dict(settings), int(seed)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def game_path(state: Mapping[str, Any], root: str | os.PathLike[str] | None = None) -> Path:
    """Where the game of a task's initial state is cached (the `.z8` story)."""
    challenge, settings, seed = str(state["challenge"]), dict(state["settings"]), int(state["seed"])
    return games_dir(root) / challenge / f"{game_key(challenge, settings, seed)}.z8"


def ensure_game(state: Mapping[str, Any], root: str | os.PathLike[str] | None = None) -> Path:
    """The cached game of a task's initial state, generated from its data first if missing."""
    path = game_path(state, root)
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    try:
        import textworld
        import textworld.challenges
        from textworld.generator import compile_game
    except ImportError as e:
        raise EngineUnavailable(INSTALL_HINT) from e
    challenge = str(state["challenge"])
    if challenge not in textworld.challenges.CHALLENGES:
        raise ValueError(f"unknown TextWorld challenge {challenge!r}; known: {', '.join(textworld.challenges.CHALLENGES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=path.parent))
    try:
        options = textworld.GameOptions()
        options.seeds = int(state["seed"])
        options.path = str(tmp / path.name)
        options.file_ext = ".z8"
        options.force_recompile = True
        make = textworld.challenges.CHALLENGES[challenge][1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")         # jericho's "not fully supported" on every story
            game = make(settings=dict(state["settings"]), options=options)
            out = Path(compile_game(game, options))
        os.replace(out.with_suffix(".json"), path.with_suffix(".json"))
        os.replace(out, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path

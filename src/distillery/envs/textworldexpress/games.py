"""TextWorldExpress's games as task families, and game settings as profiles.

A *setting* (a task's profile) is a set of knobs on a game's generation parameters and a seed
fold, written as tokens joined by '-': `default` (the game's base parameters, train seeds),
`doors`, `rooms-doors`, `distractors-test`. Knobs: `rooms` (more places), `doors` (closed
doors between them), `distractors` (more things that do not matter), `longer` (more to do);
a knob a game has no parameter for leaves that game as it is. Folds: `train` (the default),
`dev`, `test`: TextWorldExpress's own seed folds (TWC's folds also hold different objects).
A held-out setting is a combination of knobs no training setting has, on seeds it never met.

Each game also states its mechanics as text (`mechanics`): what the game's gold paths always
do, worded as the phrasebook words lessons mined from failures (`phrasebook.py`), so a
lesson the miner finds reads like the principle a task was drafted with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

KNOBS: tuple[str, ...] = ("rooms", "doors", "distractors", "longer")
FOLDS: tuple[str, ...] = ("train", "dev", "test")
DEFAULT = "default"

# Sentences shared by the games and the phrasebook (the same words, so a mined lesson and a
# drafted principle are the same text).
DOOR_RULE = "A closed door opens with open door to <name> before you can move through it."


@dataclass(frozen=True)
class Game:
    """One TextWorldExpress game: its engine name, base parameters, what each knob changes,
    its mechanics (principles), and the gold-path lengths its drafts keep."""

    name: str                                   # the family's name: twx_<game>
    engine: str                                 # the game's name in TextWorldExpress
    hint: str
    base: Mapping[str, int] = field(default_factory=dict)
    knobs: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    mechanics: tuple[str, ...] = ()
    min_gold: int = 2                           # shorter gold paths are redrawn (the goal is in sight)
    max_gold: int = 16                          # longer ones are redrawn (a small agent's step budget)
    areas: tuple[str, ...] = ()
    # The engine keeps this game's last generated instance in state shared by every game
    # object on the JVM (engine.py): an environment regenerates and replays before stepping
    # when another game object generated since (env.py).
    shared_state: bool = False

    def params(self, knobs: tuple[str, ...]) -> dict[str, int]:
        out = dict(self.base)
        for k in knobs:
            out.update(self.knobs.get(k, {}))
        return out

    def params_text(self, knobs: tuple[str, ...]) -> str:
        """The engine's `gameParams` string: `numLocations=3,includeDoors=0`."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.params(knobs).items()))

    def principles(self, knobs: tuple[str, ...]) -> list[str]:
        rules = list(self.mechanics)
        if self.params(knobs).get("includeDoors"):
            rules.append(DOOR_RULE)
        return rules


GAMES: dict[str, Game] = {g.name: g for g in (
    Game("twx_coin", "coin", "search the places for the coin and take it",
         base={"numLocations": 3, "includeDoors": 0, "numDistractorItems": 0, "limitInventorySize": 0},
         knobs={"rooms": {"numLocations": 5}, "doors": {"includeDoors": 1},
                "distractors": {"numDistractorItems": 3}},
         mechanics=("The goal is to take the coin.",), min_gold=3, areas=("navigation",)),
    Game("twx_mapreader", "mapreader", "read the map, fetch the coin and put it in the box",
         base={"numLocations": 3, "maxDistanceApart": 1, "maxDistractorItemsPerLocation": 0, "includeDoors": 0,
               "limitInventorySize": 0},
         knobs={"rooms": {"numLocations": 5, "maxDistanceApart": 2}, "doors": {"includeDoors": 1},
                "distractors": {"maxDistractorItemsPerLocation": 2}},
         mechanics=("Read the map first.", "The goal is to take the coin.", "The coin goes in the box.",
                    "Things go in the box."),
         areas=("navigation", "objects")),
    Game("twx_cooking", "cookingworld", "read the recipe, gather and prepare its ingredients, cook and eat the meal",
         base={"numLocations": 1, "numIngredients": 1, "numDistractorItems": 0, "includeDoors": 0,
               "limitInventorySize": 0},
         knobs={"rooms": {"numLocations": 2}, "doors": {"includeDoors": 1}, "distractors": {"numDistractorItems": 3},
                "longer": {"numIngredients": 2}},
         mechanics=("Read the cookbook first.", "When every ingredient is ready, prepare the meal.",
                    "Finish by eating the meal."),
         max_gold=20, areas=("objects", "recipes")),
    Game("twx_twc", "twc", "put each thing lying around where it usually belongs",
         base={"numLocations": 1, "numItemsToPutAway": 1, "includeDoors": 0, "limitInventorySize": 0},
         knobs={"rooms": {"numLocations": 2}, "doors": {"includeDoors": 1}, "longer": {"numItemsToPutAway": 2}},
         mechanics=("Put each thing where it usually belongs.",), areas=("objects", "commonsense")),
    Game("twx_arithmetic", "arithmetic", "solve the math problem and put the thing with that quantity in the box",
         mechanics=("Read the math problem first.", "Things go in the box."), areas=("objects", "arithmetic")),
    Game("twx_sorting", "sorting", "put the things in the box from the smallest quantity up",
         mechanics=("Things go in the box.",), areas=("objects", "ordering"), shared_state=True),
    Game("twx_simonsays", "simonsays", "do exactly what Simon says",
         base={"gameLength": 3, "numDistractors": 2},
         knobs={"longer": {"gameLength": 5}, "distractors": {"numDistractors": 4}},
         mechanics=("Do exactly what Simon says.",), areas=("instructions",)),
    Game("twx_peckingorder", "peckingorder", "read the instructions book and follow it until the game ends",
         mechanics=("Read the instructions book first.",), areas=("instructions",)),
)}


@dataclass(frozen=True)
class Setting:
    knobs: tuple[str, ...]
    fold: str

    @property
    def name(self) -> str:
        parts = list(self.knobs) or [DEFAULT]
        return "-".join(parts + ([self.fold] if self.fold != "train" else []))


def parse_setting(profile: str) -> Setting:
    """The knobs and seed fold a profile names; ValueError naming what is allowed otherwise."""
    tokens = [t for t in profile.split("-") if t]
    knobs: list[str] = []
    fold = "train"
    bad = []
    for i, tok in enumerate(tokens):
        if tok == DEFAULT and i == 0:
            continue
        if tok in FOLDS and i == len(tokens) - 1:
            fold = tok
        elif tok in KNOBS and tok not in knobs:
            knobs.append(tok)
        else:
            bad.append(tok)
    if bad or not tokens:
        raise ValueError(
            f"unknown TextWorldExpress setting {profile!r}: a setting is '{DEFAULT}' or knobs from "
            f"{', '.join(KNOBS)} joined by '-', optionally ending in a seed fold ({', '.join(FOLDS)}; "
            "default train), e.g. 'rooms-doors-test'")
    return Setting(tuple(sorted(knobs, key=KNOBS.index)), fold)

"""TextWorld's phrasebook for the experience miner (`distillery.envs.phrasebook`).

A failed game names the commands of TextWorld's plan from where the episode ended
(`won(next=open fridge | take white onion from fridge)`, `env.py`); `missing_calls` reads
them back as TextWorld's tool calls, so the rules miner learns from failures what the game
wanted. Check names are read as TextWorldExpress reads them (the same form).
"""

from __future__ import annotations

from distillery.envs.phrasebook import Phrasebook
from distillery.envs.textworld.commands import TOOL_NAMES, from_command
from distillery.envs.textworldexpress.phrasebook import next_commands, parse_check_name
from distillery.types import ToolCall


def missing_calls(name: str) -> list[ToolCall]:
    """The calls a failed `won` check says were still needed, in plan order."""
    return [from_command(c) for c in next_commands(name)]


CHECK_TOOLS: dict[str, tuple[str, ...]] = {"won": tuple(sorted(TOOL_NAMES)), "not_lost": tuple(sorted(TOOL_NAMES))}

PHRASES: dict[tuple[str, str, str], str] = {
    ("take", "obj", "value"): "the goal is to take the {value}",
    ("examine", "obj", "value"): "examine the {value} first",
    ("prepare", "obj", "value"): "when every ingredient is ready, prepare the {value}",
    ("eat", "obj", "value"): "finish by eating the {value}",
    ("open", "obj", "value"): "open the {value} before you take from it",
    ("unlock", "key", "value"): "doors and containers unlock with the {value}",
    ("cook", "appliance", "value"): "ingredients are cooked with the {value}",
    ("put", "on", "value"): "things go on the {value}",
    ("insert", "into", "value"): "things go into the {value}",
}

PHRASEBOOK = Phrasebook(phrases=PHRASES, check_tools=CHECK_TOOLS, parse_check=parse_check_name,
                        missing_calls=missing_calls)

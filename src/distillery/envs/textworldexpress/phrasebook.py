"""TextWorldExpress's phrasebook for the experience miner (`distillery.envs.phrasebook`).

A failed game names the gold commands the agent never ran (`won(next=take coin | ...)`,
`env.py`); `missing_calls` reads them back as tool calls, so the rules miner learns from
failures what the game wanted. Lessons read as game mechanics, in the words `games.py` drafts
each game's principles with: a constant argument ("take gets obj 'coin'") reads "The goal is
to take the coin.", a door template ("open gets obj 'door to <name>'") reads
games.DOOR_RULE.
"""

from __future__ import annotations

import re

from distillery.envs.phrasebook import Phrasebook
from distillery.envs.textworldexpress.commands import TOOL_NAMES, from_command
from distillery.types import ToolCall

_NAME = re.compile(r"(won|not_lost)(?:\((.*)\))?", re.S)


def parse_check_name(name: str) -> tuple[str, dict[str, str]] | None:
    """("won", {"next": "take coin | ..."}) for a failed check as `env.py` names it."""
    m = _NAME.fullmatch(name.strip())
    if m is None:
        return None
    args: dict[str, str] = {}
    if m[2]:
        key, eq, value = m[2].partition("=")
        if not eq:
            return None
        args[key] = value
    return m[1], args


def next_commands(name: str) -> list[str]:
    """The game commands a failed `won` check says were still needed, in order."""
    parsed = parse_check_name(name)
    if parsed is None or parsed[0] != "won" or "next" not in parsed[1]:
        return []
    return [c for c in parsed[1]["next"].split(" | ") if c.strip()]


def missing_calls(name: str) -> list[ToolCall]:
    """The calls a failed `won` check says were still needed, in gold order."""
    return [from_command(c) for c in next_commands(name)]


# A failed game speaks about every tool: any call may be what went wrong.
CHECK_TOOLS: dict[str, tuple[str, ...]] = {"won": tuple(sorted(TOOL_NAMES)), "not_lost": tuple(sorted(TOOL_NAMES))}

PHRASES: dict[tuple[str, str, str], str] = {
    ("take", "obj", "value"): "the goal is to take the {value}",
    ("read", "obj", "value"): "read the {value} first",
    ("put", "container", "value"): "things go in the {value}",
    ("prepare", "obj", "value"): "when every ingredient is ready, prepare the {value}",
    ("eat", "obj", "value"): "finish by eating the {value}",
    ("open", "obj", "template"): "a closed door opens with open {value} before you can move through it",
    ("open", "obj", "value"): "open the {value} to see inside",
    ("cook", "appliance", "value"): "ingredients are cooked in the {value}",
}

FAMILY_PHRASES: dict[tuple[str, str, str, str], str] = {
    ("twx_mapreader", "put", "obj", "value"): "the {value} goes in the box",
}

PHRASEBOOK = Phrasebook(phrases=PHRASES, family_phrases=FAMILY_PHRASES, check_tools=CHECK_TOOLS,
                        parse_check=parse_check_name, missing_calls=missing_calls)

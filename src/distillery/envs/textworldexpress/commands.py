"""TextWorldExpress's tools: its verb templates as tool calls, plus a generic `command(text)`.

A game command is text ("take coin", "put coin in box", "open door to north"). Each verb
template becomes a tool (`take(obj)`, `put(obj, container)`, `move(direction)`), so a model
writes the same compact calls as in every other environment, and `command(text)` takes any
command verbatim (Simon Says' "jump up and down" has no template). `to_command` renders a
call as the game's text and `from_command` reads a game command (a gold path) back into the
most specific call; `from_command(c)` always renders back to `c` (`command` otherwise).

Shared with the TextWorld adapter (`distillery.envs.textworld`), whose commands are the same
kind of text.
"""

from __future__ import annotations

import re

from distillery.envs.base import ToolParam as P
from distillery.envs.base import ToolSpec
from distillery.types import ToolCall

# One-object verbs: "<verb> <obj>". `mutates` marks the ones that change the game's state
# (what evidence for mining and failure analysis count as the work done).
OBJECT_VERBS: dict[str, tuple[str, bool]] = {
    "take": ("Pick something up.", True),
    "open": ("Open a container or a door ('door to north').", True),
    "close": ("Close a container or a door.", True),
    "examine": ("Look closely at something.", False),
    "read": ("Read something (a cookbook, a map, a math problem, an instructions book).", False),
    "eat": ("Eat something.", True),
    "drop": ("Put something you carry down here.", True),
    "slice": ("Slice an ingredient (with a knife in your inventory).", True),
    "dice": ("Dice an ingredient (with a knife in your inventory).", True),
    "chop": ("Chop an ingredient (with a knife in your inventory).", True),
    "prepare": ("Prepare the meal once its ingredients are ready ('meal').", True),
    "smell": ("Smell something.", False),
    "touch": ("Touch something.", False),
}

TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec("look", "Describe where you are (the game's 'look around')."),
    ToolSpec("inventory", "List what you carry."),
    ToolSpec("task", "Repeat the task (some games only)."),
    ToolSpec("move", "Go to a neighbouring place.",
             (P("direction", description="north, south, east or west", kind="direction"),), mutates=True),
    *(ToolSpec(verb, desc, (P("obj", description="the thing, as the game names it", kind="name"),), mutates=mut)
      for verb, (desc, mut) in OBJECT_VERBS.items()),
    ToolSpec("put", "Put something you carry in or on something.",
             (P("obj", description="what you carry", kind="name"),
              P("container", description="where it goes", kind="name")), mutates=True),
    ToolSpec("cook", "Cook an ingredient with an appliance (stove, oven, barbeque).",
             (P("obj", description="the ingredient", kind="name"),
              P("appliance", description="stove, oven or barbeque", kind="name")), mutates=True),
    ToolSpec("command", "Type any game command as it is (e.g. 'jump up and down').",
             (P("text", description="the command", kind="text"),), mutates=True),
    ToolSpec("finish", "Stop playing; the game is scored as it stands."),
)

TOOL_NAMES = frozenset(s.name for s in TOOL_SPECS)

# Commands the game knows with no argument: call name -> the game's text.
_BARE = {"look": "look around", "inventory": "inventory", "task": "task"}
_BARE_BACK = {v: k for k, v in _BARE.items()}
_TWO = {"put": "put {obj} in {container}", "cook": "cook {obj} in {appliance}"}
_TWO_RE = {"put": re.compile(r"put (.+?) in (.+)"), "cook": re.compile(r"cook (.+?) in (.+)")}
_WS = re.compile(r"\s+")
MAX_COMMAND_CHARS = 200


def normalise(text: str) -> str:
    """A command as the game spells commands: lower case, single spaces, no ends."""
    return _WS.sub(" ", text).strip().lower()


def command_error(text: str) -> str:
    """'' when `text` can be a game command, else why not (control characters, too long)."""
    if len(text) > MAX_COMMAND_CHARS:
        return f"a command is at most {MAX_COMMAND_CHARS} characters, this one has {len(text)}"
    if any(not ch.isprintable() for ch in text):
        return "a command cannot hold control or unprintable characters"
    if not text:
        return "empty command"
    return ""


def to_command(call: ToolCall) -> str:
    """The game's text for a (valid) call, normalised; '' for `finish`."""
    if call.tool == "finish":
        return ""
    if call.tool in _BARE:
        return _BARE[call.tool]
    args = {k: normalise(str(v)) for k, v in call.args.items()}
    if call.tool == "command":
        return args["text"]
    if call.tool == "move":
        return f"move {args['direction']}"
    if call.tool in _TWO:
        return _TWO[call.tool].format(**args)
    return f"{call.tool} {args['obj']}"


def from_command(text: str) -> ToolCall:
    """The most specific call whose game text is `text` (a gold command), `command` if none."""
    cmd = normalise(text)
    candidates: list[ToolCall] = []
    if cmd in _BARE_BACK:
        candidates.append(ToolCall(_BARE_BACK[cmd]))
    verb, _, rest = cmd.partition(" ")
    if verb == "move" and rest and " " not in rest:
        candidates.append(ToolCall("move", {"direction": rest}))
    if verb in _TWO_RE and (m := _TWO_RE[verb].fullmatch(cmd)):
        second = "container" if verb == "put" else "appliance"
        candidates.append(ToolCall(verb, {"obj": m[1], second: m[2]}))
    if verb in OBJECT_VERBS and rest:
        candidates.append(ToolCall(verb, {"obj": rest}))
    for call in candidates:
        if to_command(call) == cmd:
            return call
    return ToolCall("command", {"text": cmd})

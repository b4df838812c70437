"""TextWorld's tools: its command grammar's verb templates as tool calls, plus a generic
`command(text)`.

TextWorld's knowledge base words every action as a template ("take {o} from {c}",
"unlock {d} with {k}", "cook {f} with {oven}"); each template becomes a tool (`take(obj,
source?)`, `unlock(obj, key)`, `cook(obj, appliance)`), so a model writes the same compact
calls as in every other environment, and `command(text)` takes any command verbatim.
`to_command` renders a call as the game's text and `from_command` reads a game command (a
walkthrough step) back into the most specific call; `from_command(c)` always renders back
to `c` (`command` otherwise). Text checks (`normalise`, `command_error`) are the ones
TextWorldExpress uses: the commands are the same kind of text.
"""

from __future__ import annotations

import re

from distillery.envs.base import ToolParam as P
from distillery.envs.base import ToolSpec
from distillery.envs.textworldexpress.commands import MAX_COMMAND_CHARS, command_error, normalise
from distillery.types import ToolCall

__all__ = ["MAX_COMMAND_CHARS", "TOOL_NAMES", "TOOL_SPECS", "command_error", "from_command", "normalise",
           "to_command"]

# One-object verbs: "<verb> <obj>" -> (description, mutates).
OBJECT_VERBS: dict[str, tuple[str, bool]] = {
    "open": ("Open a container or a door.", True),
    "close": ("Close a container or a door.", True),
    "examine": ("Look closely at something (the cookbook shows the recipe).", False),
    "drop": ("Put something you carry down here.", True),
    "eat": ("Eat something you carry.", True),
    "drink": ("Drink something you carry.", True),
    "prepare": ("Prepare the meal once its ingredients are ready ('meal').", True),
}
# Two-object verbs: tool -> (description, template, second argument, its description).
PAIR_VERBS: dict[str, tuple[str, str, str, str]] = {
    "put": ("Put something you carry on a supporter (a table, a counter).", "put {obj} on {on}", "on",
            "the supporter"),
    "insert": ("Put something you carry into a container.", "insert {obj} into {into}", "into", "the container"),
    "unlock": ("Unlock a door or a container with a key you carry.", "unlock {obj} with {key}", "key", "the key"),
    "lock": ("Lock a door or a container with a key you carry.", "lock {obj} with {key}", "key", "the key"),
    "cook": ("Cook an ingredient you carry with an appliance (oven, stove, toaster).", "cook {obj} with {appliance}",
             "appliance", "oven, stove or toaster"),
    "slice": ("Slice an ingredient with a knife you carry.", "slice {obj} with {knife}", "knife", "the knife"),
    "dice": ("Dice an ingredient with a knife you carry.", "dice {obj} with {knife}", "knife", "the knife"),
    "chop": ("Chop an ingredient with a knife you carry.", "chop {obj} with {knife}", "knife", "the knife"),
}

TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec("look", "Describe where you are."),
    ToolSpec("inventory", "List what you carry."),
    ToolSpec("go", "Go to a neighbouring room.",
             (P("direction", description="north, south, east or west", kind="direction"),), mutates=True),
    ToolSpec("take", "Pick something up (from a container or supporter, if it is in or on one).",
             (P("obj", description="the thing, as the game names it", kind="name"),
              P("source", description="the container or supporter it is in or on", required=False, kind="name")),
             mutates=True),
    *(ToolSpec(verb, desc, (P("obj", description="the thing, as the game names it", kind="name"),), mutates=mut)
      for verb, (desc, mut) in OBJECT_VERBS.items()),
    *(ToolSpec(verb, desc, (P("obj", description="the thing, as the game names it", kind="name"),
                            P(second, description=second_desc, kind="name")), mutates=True)
      for verb, (desc, _, second, second_desc) in PAIR_VERBS.items()),
    ToolSpec("command", "Type any game command as it is.",
             (P("text", description="the command", kind="text"),), mutates=True),
    ToolSpec("finish", "Stop playing; the game is scored as it stands."),
)

TOOL_NAMES = frozenset(s.name for s in TOOL_SPECS)

_BARE = {"look": "look", "inventory": "inventory"}
_BARE_BACK = {v: k for k, v in _BARE.items()}
_PAIR_RE = {verb: re.compile(re.escape(verb) + r" (.+?) " + re.escape(tpl.split("}")[1].split("{")[0].strip())
                             + r" (.+)")
            for verb, (_, tpl, _, _) in PAIR_VERBS.items()}
_TAKE_FROM = re.compile(r"take (.+?) from (.+)")


def to_command(call: ToolCall) -> str:
    """The game's text for a (valid) call, normalised; '' for `finish`."""
    if call.tool == "finish":
        return ""
    if call.tool in _BARE:
        return _BARE[call.tool]
    args = {k: normalise(str(v)) for k, v in call.args.items()}
    if call.tool == "command":
        return args["text"]
    if call.tool == "go":
        return f"go {args['direction']}"
    if call.tool == "take":
        return f"take {args['obj']} from {args['source']}" if args.get("source") else f"take {args['obj']}"
    if call.tool in PAIR_VERBS:
        return PAIR_VERBS[call.tool][1].format(**args)
    return f"{call.tool} {args['obj']}"


def from_command(text: str) -> ToolCall:
    """The most specific call whose game text is `text` (a walkthrough step), `command` if none."""
    cmd = normalise(text)
    candidates: list[ToolCall] = []
    if cmd in _BARE_BACK:
        candidates.append(ToolCall(_BARE_BACK[cmd]))
    verb, _, rest = cmd.partition(" ")
    if verb == "go" and rest and " " not in rest:
        candidates.append(ToolCall("go", {"direction": rest}))
    if verb == "take" and (m := _TAKE_FROM.fullmatch(cmd)):
        candidates.append(ToolCall("take", {"obj": m[1], "source": m[2]}))
    if verb in PAIR_VERBS and (m := _PAIR_RE[verb].fullmatch(cmd)):
        candidates.append(ToolCall(verb, {"obj": m[1], PAIR_VERBS[verb][2]: m[2]}))
    if verb in OBJECT_VERBS or verb == "take":
        if rest:
            candidates.append(ToolCall(verb, {"obj": rest}))
    for call in candidates:
        if to_command(call) == cmd:
            return call
    return ToolCall("command", {"text": cmd})

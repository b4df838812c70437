"""ScienceWorld's tools: its action templates as tool calls, a generic `command(text)`, and
`valid_actions()`, which lists the actions valid here on demand (fetching them costs as
much as several steps, so the environment never does it unasked).

`to_command` renders a call as the simulator's text and `from_command` reads a gold action
back into the most specific call; `from_command(c)` always renders back to `c` (`command`
otherwise: a gold path's numeric answers to an ambiguity prompt, "0").
"""

from __future__ import annotations

from distillery.envs.base import ToolParam as P
from distillery.envs.base import ToolSpec
from distillery.envs.textworldexpress.commands import MAX_COMMAND_CHARS, command_error, normalise
from distillery.types import ToolCall

__all__ = ["MAX_COMMAND_CHARS", "TOOL_NAMES", "TOOL_SPECS", "command_error", "from_command", "normalise", "to_command"]

# Bare actions: tool -> the simulator's text.
BARE: dict[str, tuple[str, str, bool]] = {
    "look": ("look around", "Describe the room you are in.", False),
    "inventory": ("inventory", "List what you carry.", False),
    "task": ("task", "Repeat the task.", False),
    "wait": ("wait", "Let 10 time steps pass.", True),
    "wait1": ("wait1", "Let 1 time step pass.", True),
}
# One-object actions: tool -> (prefix, description, mutates).
SINGLE: dict[str, tuple[str, str, bool]] = {
    "go": ("go to", "Go to a neighbouring location (through an open door).", True),
    "open": ("open", "Open a door or a container.", True),
    "close": ("close", "Close a door or a container.", True),
    "pick_up": ("pick up", "Pick something up.", True),
    "put_down": ("put down", "Put down something you carry.", True),
    "focus": ("focus on", "Focus on the thing the task is about (focusing on the wrong thing fails the task).", True),
    "look_at": ("look at", "Look closely at something.", False),
    "look_in": ("look in", "Look inside a container.", False),
    "read": ("read", "Read something.", False),
    "activate": ("activate", "Switch a device on.", True),
    "deactivate": ("deactivate", "Switch a device off.", True),
    "eat": ("eat", "Eat something.", True),
    "flush": ("flush", "Flush a toilet.", True),
    "mix": ("mix", "Mix what a container holds.", True),
    "disconnect": ("disconnect", "Disconnect an electrical component.", True),
}
# Two-object actions: tool -> (verb, joiner, second argument, description).
PAIR: dict[str, tuple[str, str, str, str]] = {
    "move": ("move", "to", "to", "Move something into a container or place."),
    "pour": ("pour", "in", "into", "Pour something into a container."),
    "dunk": ("dunk", "in", "into", "Dunk something into a container."),
    "use": ("use", "on", "on", "Use a tool or device on something."),
    "connect": ("connect", "to", "to", "Connect two electrical terminals."),
}
BLOCKED = frozenset({"reset task"})        # would restart the episode's world from inside it

TOOL_SPECS: tuple[ToolSpec, ...] = (
    *(ToolSpec(name, desc, mutates=mut) for name, (_, desc, mut) in BARE.items()),
    *(ToolSpec(name, desc, (P("obj", description="the thing or place, as the simulator names it", kind="name"),),
               mutates=mut) for name, (_, desc, mut) in SINGLE.items()),
    *(ToolSpec(name, desc, (P("obj", description="the thing", kind="name"),
                            P(second, description="the other thing", kind="name")), mutates=True)
      for name, (_, _, second, desc) in PAIR.items()),
    ToolSpec("valid_actions", "List the actions valid here (long; use when stuck)."),
    ToolSpec("command", "Type any action as it is (e.g. '0' to answer which thing you meant).",
             (P("text", description="the action", kind="text"),), mutates=True),
    ToolSpec("finish", "Stop; the task is scored as it stands."),
)
TOOL_NAMES = frozenset(s.name for s in TOOL_SPECS)
_BARE_BACK = {text: name for name, (text, _, _) in BARE.items()}


def to_command(call: ToolCall) -> str:
    """The simulator's text for a (valid) call, normalised; '' for `finish` and `valid_actions`."""
    if call.tool in ("finish", "valid_actions"):
        return ""
    if call.tool in BARE:
        return BARE[call.tool][0]
    args = {k: normalise(str(v)) for k, v in call.args.items()}
    if call.tool == "command":
        return args["text"]
    if call.tool in SINGLE:
        return f"{SINGLE[call.tool][0]} {args['obj']}"
    verb, joiner, second, _ = PAIR[call.tool]
    return f"{verb} {args['obj']} {joiner} {args[second]}"


def from_command(text: str) -> ToolCall:
    """The most specific call whose text is `text` (a gold action), `command` if none."""
    cmd = normalise(text)
    candidates: list[ToolCall] = []
    if cmd in _BARE_BACK:
        candidates.append(ToolCall(_BARE_BACK[cmd]))
    for name, (verb, joiner, second, _) in PAIR.items():
        if cmd.startswith(verb + " ") and f" {joiner} " in cmd[len(verb) + 1:]:
            obj, _, other = cmd[len(verb) + 1:].partition(f" {joiner} ")
            if obj and other:
                candidates.append(ToolCall(name, {"obj": obj, second: other}))
    for name, (prefix, _, _) in sorted(SINGLE.items(), key=lambda kv: -len(kv[1][0])):
        if cmd.startswith(prefix + " ") and cmd[len(prefix) + 1:]:
            candidates.append(ToolCall(name, {"obj": cmd[len(prefix) + 1:]}))
    for call in candidates:
        if to_command(call) == cmd:
            return call
    return ToolCall("command", {"text": cmd})

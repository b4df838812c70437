"""What the text-game adapters (TextWorldExpress, TextWorld, ScienceWorld) share: the opening
of every step (parse the call, answer `finish` and a broken engine without touching the game)
and the gold commands an agent left unplayed, which a failed check names for the miner."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from distillery.envs.actions import parse_action
from distillery.envs.base import ToolSpec
from distillery.types import StepResult, ToolCall

MAX_NEXT_SHOWN = 10     # gold commands a failed `won` check names


def next_commands_name(commands: Sequence[str]) -> str:
    """The name of a failed `won` check: the commands still needed, '|'-separated."""
    shown = list(commands[:MAX_NEXT_SHOWN])
    return f"won(next={' | '.join(shown)})" if shown else "won"


def engine_failed(broken: str, tool: str, args_json: str, state_hash: str, engine: str = "game engine") -> StepResult:
    """The episode's last observation once the game's engine has failed."""
    return StepResult(f"The {engine} failed: {broken}", 0.0, True, tool=tool, args_json=args_json,
                      valid=False, error=broken, state_hash=state_hash)


def open_step(action_text: Any, specs: Sequence[ToolSpec], state_hash: Callable[[], str],
              broken: str, engine: str = "game engine") -> StepResult | tuple[ToolCall, str]:
    """The step's result when the game need not be asked (an unparseable action, `finish`, an
    engine that already failed), else the parsed call and its canonical JSON arguments."""
    parsed = parse_action(action_text, specs)
    if not parsed.valid or parsed.call is None:
        return StepResult(f"Invalid action: {parsed.error}", 0.0, False, valid=False, error=parsed.error,
                          state_hash=state_hash())
    call = parsed.call
    args_json = json.dumps(call.args, ensure_ascii=False, sort_keys=True)
    if call.tool == "finish":
        return StepResult("Finished.", 0.0, True, tool="finish", args_json=args_json, state_hash=state_hash())
    if broken:
        return engine_failed(broken, call.tool, args_json, state_hash(), engine)
    return call, args_json


def remaining_gold(gold: Sequence[str], played: Sequence[str]) -> list[str]:
    """The gold commands the agent never ran, in gold order (each run cancels one)."""
    left = Counter(played)
    out = []
    for c in gold:
        if left[c] > 0:
            left[c] -= 1
        else:
            out.append(c)
    return out

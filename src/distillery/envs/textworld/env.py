"""TextWorldEnv: one generated TextWorld game per episode, played through tool calls.

The observation is the game's own feedback text (at reset without TextWorld's ASCII-art
banner: the objective and the first room). A call is rendered as the game's command
(`commands.to_command`) and played only if TextWorld's state tracker admits it in the
current state; anything else — unparseable text, an unknown tool, a command the game does
not admit here, control characters, text over 200 characters, not a string at all — is
answered with an observation saying so (`valid=False`) and never reaches the engine (whose
Z-machine takes raw bytes). If the engine itself fails, the step says so and ends the
episode; nothing raises.

Verification: `won` and `not_lost`, as TextWorld reports them. A failed `won` names the
commands of TextWorld's own plan from the state the episode ended in (`policy_commands`),
`won(next=open fridge | take white onion from fridge | ...)`: what the game still wanted,
which the principle miner reads back as calls (`phrasebook.missing_calls`). Score: 1 when
won and not lost, 0 when lost, else the game's score over its maximum (below 1).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from distillery.envs.text_game import engine_failed, next_commands_name, open_step
from distillery.envs.textworld import engine
from distillery.envs.textworld.commands import TOOL_SPECS, command_error, normalise, to_command
from distillery.envs.textworld.games import ensure_game
from distillery.types import CheckResult, StepResult, Task, Verification

NOT_ADMITTED = "That is not a command the game accepts here."
_ART = re.compile(r"^[\s_|\\/$<>]*$")


def intro(feedback: str, objective: str) -> str:
    """The first observation without TextWorld's banner: from the objective on."""
    if objective and objective in feedback:
        return feedback[feedback.index(objective):].strip()
    lines = feedback.splitlines()
    while lines and _ART.match(lines[0]):
        lines.pop(0)
    return "\n".join(lines).strip()


class TextWorldEnv:
    """A generated TextWorld game behind the environment protocol (`envs.base.Environment`)."""

    name = "textworld"

    def __init__(self, games_dir: str | os.PathLike[str] | None = None) -> None:
        self.games_dir = games_dir
        self._env: Any = None
        self._path: Path | None = None
        self.task: Task | None = None
        self._state: Any = None
        self._valid: dict[str, str] = {}        # normalised command -> the game's own spelling
        self._played: list[str] = []
        self._broken = ""

    # ---- protocol -------------------------------------------------------------------

    def reset(self, task: Task) -> str:
        path = ensure_game(task.initial_state, self.games_dir)
        if self._env is None or path != self._path:
            self._close_engine()
            self._env = engine.start(path)
            self._path = path
        self.task = task
        self._played = []
        self._broken = ""
        self._take(self._env.reset())
        return intro(str(self._state.feedback or ""), str(self._state.objective or ""))

    def step(self, action_text: Any) -> StepResult:
        if self.task is None or self._state is None:
            return StepResult("No game: call reset first.", 0.0, True, valid=False, error="no task")
        opened = open_step(action_text, TOOL_SPECS, self.state_hash, self._broken)
        if isinstance(opened, StepResult):
            return opened
        call, args_json = opened
        cmd = to_command(call)
        bad = command_error(cmd)
        if bad:
            return StepResult(f"Invalid action: {bad}", 0.0, False, tool=call.tool, args_json=args_json, valid=False,
                              error=bad, state_hash=self.state_hash())
        if cmd not in self._valid:
            return StepResult(NOT_ADMITTED, 0.0, False, tool=call.tool, args_json=args_json, valid=False,
                              error=f"'{cmd}' is not a command the game accepts here", state_hash=self.state_hash())
        try:
            state, _, _ = self._env.step(self._valid[cmd])
            self._take(state)
        except Exception as e:  # noqa: BLE001 - an engine failure is the episode's observation, not a raise
            self._broken = f"{type(e).__name__}: {str(e)[:200]}"
            return engine_failed(self._broken, call.tool, args_json, self.state_hash())
        self._played.append(cmd)
        done = bool(self._state.won or self._state.lost)
        return StepResult(str(self._state.feedback or "").strip() or "(nothing happens)", 0.0, done, tool=call.tool,
                          args_json=args_json, state_hash=self.state_hash())

    def verify(self) -> Verification:
        assert self.task is not None and self._state is not None, "verify before reset"
        won, lost = bool(self._state.won), bool(self._state.lost)
        left = [normalise(str(c)) for c in (self._state.policy_commands or ())] if not won else []
        checks = [
            CheckResult("won" if won else next_commands_name(left), "won", won,
                        "" if won else "the game is not won; TextWorld's plan from here: " + ("; ".join(left) or "none")),
            CheckResult("not_lost", "not_lost", not lost, "the game says the task failed" if lost else ""),
        ]
        if won and not lost:
            score = 1.0
        elif lost:
            score = 0.0
        else:
            top = float(self._state.max_score or 0) or 1.0
            score = min(max(float(self._state.score or 0) / top, 0.0), 0.99)
        return Verification(score, won and not lost, checks)

    def state_hash(self) -> str:
        """The world's facts as TextWorld tracks them, and the outcome."""
        st = self._state
        facts = sorted(str(f) for f in (getattr(st, "facts", None) or ())) if st is not None else []
        blob = "\x1f".join([*facts, str(getattr(st, "won", None)), str(getattr(st, "lost", None)), self._broken])
        return hashlib.sha256(blob.encode("utf-8", "backslashreplace")).hexdigest()[:16]

    def close(self) -> None:
        self._close_engine()

    # ---- helpers --------------------------------------------------------------------

    def _close_engine(self) -> None:
        if self._env is not None:
            try:
                self._env.close()
            except Exception:  # noqa: BLE001 - the game is already gone: nothing to release
                pass
        self._env = None
        self._path = None

    def _take(self, state: Any) -> None:
        self._state = state
        self._valid = {normalise(str(a)): str(a) for a in (state.admissible_commands or ())}

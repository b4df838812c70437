"""TwxEnv: one TextWorldExpress game per episode, played through tool calls.

The observation is the game's own feedback text. A call is rendered as the game's command
(`commands.to_command`) and played only if the game lists it among the commands valid in the
current state; anything else — unparseable text, an unknown tool, a command the game does not
accept here, control characters, text over 200 characters, not a string at all — is answered
with an observation saying so (`valid=False`) and never reaches the engine. If the engine
itself fails, the step says so and ends the episode; nothing raises. A game whose engine keeps
shared state (the sorting game: engine.py) is regenerated and replayed before a step when
another game object on the JVM generated since (`_resync`).

Verification: `won` (the game says the task succeeded) and `not_lost` (it did not say the
task failed). A failed `won` names the gold commands the agent never ran, in gold order
(`won(next=open door to west | move west | take coin)`): the game's feedback on what was
missing, which the principle miner reads (`phrasebook.missing_calls`). Score: 1 when won and
not lost, 0 when lost, else the game's own progress score (below 1).
"""

from __future__ import annotations

import hashlib
from typing import Any

from distillery.envs.text_game import engine_failed, next_commands_name, open_step, remaining_gold
from distillery.envs.textworldexpress import engine
from distillery.envs.textworldexpress.commands import (
    TOOL_SPECS,
    command_error,
    normalise,
    to_command,
)
from distillery.envs.textworldexpress.games import GAMES
from distillery.types import CheckResult, StepResult, Task, Verification

UNKNOWN = "Unknown action: I'm not sure what you mean."


def game_of(task: Task) -> tuple[str, str, int, str]:
    """(engine game, gameParams, seed, fold) of a task's initial state."""
    st = task.initial_state
    return str(st["engine"]), str(st["params"]), int(st["seed"]), str(st["fold"])


class TwxEnv:
    """A TextWorldExpress game behind the environment protocol (`envs.base.Environment`)."""

    name = "textworldexpress"

    def __init__(self) -> None:
        self._game: Any = None
        self._shared = True
        self._loaded: tuple[str, str] | None = None
        self.task: Task | None = None
        self._valid: dict[str, str] = {}       # normalised command -> the game's own spelling
        self._played: list[str] = []             # normalised, as the agent's calls render
        self._sent: list[str] = []               # the same commands as the game spelled them
        self._generated: tuple[int, str] | None = None
        self._info: dict[str, Any] = {}
        self._broken = ""

    # ---- protocol -------------------------------------------------------------------

    def reset(self, task: Task) -> str:
        if self._game is None:
            self._game = engine.new_game()
        name, params, seed, fold = game_of(task)
        if self._loaded != (name, params):
            engine.load(self._game, name, params)
            self._loaded = (name, params)
        self.task = task
        self._played, self._sent = [], []
        self._broken = ""
        self._shared = GAMES[task.family].shared_state if task.family in GAMES else True
        self._generated = (seed, fold)
        self._take(engine.generate(self._game, seed, fold, False))
        return str(self._info.get("observation", ""))

    def step(self, action_text: Any) -> StepResult:
        if self.task is None:
            return StepResult("No game: call reset first.", 0.0, True, valid=False, error="no task")
        opened = open_step(action_text, TOOL_SPECS, self.state_hash, self._broken)
        if isinstance(opened, StepResult):
            return opened
        call, args_json = opened
        cmd = to_command(call)
        bad = command_error(cmd)
        if not bad and cmd not in self._valid:
            bad = f"'{cmd}' is not a command the game accepts here"
        if bad:
            obs = UNKNOWN if not command_error(cmd) else f"Invalid action: {bad}"
            return StepResult(obs, 0.0, False, tool=call.tool, args_json=args_json, valid=False, error=bad,
                              state_hash=self.state_hash())
        try:
            sent = self._valid[cmd]
            self._resync()
            self._take(engine.step(self._game, sent))
        except Exception as e:  # noqa: BLE001 - an engine failure is the episode's observation, not a raise
            self._broken = f"{type(e).__name__}: {str(e)[:200]}"
            return engine_failed(self._broken, call.tool, args_json, self.state_hash())
        self._played.append(cmd)
        self._sent.append(sent)
        done = bool(self._info.get("tasksuccess") or self._info.get("taskfailure"))
        return StepResult(str(self._info.get("observation", "")), 0.0, done, tool=call.tool, args_json=args_json,
                          state_hash=self.state_hash())

    def verify(self) -> Verification:
        assert self.task is not None, "verify before reset"
        won = bool(self._info.get("tasksuccess"))
        lost = bool(self._info.get("taskfailure"))
        gold = [to_command(c) for c in self.task.reference_solution]
        left = remaining_gold(gold, self._played)
        checks = [
            CheckResult(next_commands_name(left) if not won else "won", "won", won,
                        "" if won else "the game is not won; gold commands never run: " + ("; ".join(left) or "none")),
            CheckResult("not_lost", "not_lost", not lost, "the game says the task failed" if lost else ""),
        ]
        if won and not lost:
            score = 1.0
        elif lost:
            score = 0.0
        else:
            score = min(max(float(self._info.get("score") or 0.0), 0.0), 0.99)
        return Verification(score, won and not lost, checks)

    def state_hash(self) -> str:
        """The game state as the agent can know it: where it is, what it carries, the outcome."""
        info = self._info
        blob = "\x1f".join([str(info.get("look", "")), str(info.get("inventory", "")),
                            str(info.get("tasksuccess")), str(info.get("taskfailure")), self._broken])
        return hashlib.sha256(blob.encode("utf-8", "backslashreplace")).hexdigest()[:16]

    def close(self) -> None:
        engine.release(self._game)
        self._game = None
        self._loaded = None

    # ---- helpers --------------------------------------------------------------------

    def _resync(self) -> None:
        """Before a step of a game whose engine keeps the last generated game in shared state
        (engine.py): if another game object generated since, generate this game again and
        replay what was played, so the step acts on this episode's game."""
        if not self._shared or engine.generated_last(self._game) or self._generated is None:
            return
        seed, fold = self._generated
        engine.generate(self._game, seed, fold, False)
        for c in self._sent:
            engine.step(self._game, c)

    def _take(self, info: dict[str, Any]) -> None:
        self._info = info
        self._valid = {normalise(str(a)): str(a) for a in info.get("validActions") or ()}

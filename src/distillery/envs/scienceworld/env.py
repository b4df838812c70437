"""ScienceWorldEnv: one ScienceWorld task variation per episode, played through tool calls.

The simulator is taken from the worker's pool when the environment is built (at most
`engine.MAX_INSTANCES` per process: a fifth raises `engine.InstanceLimitError`) and given
back by `close`. `reset` loads the variation afresh (`server.load`, faster than the
package's `reset`); `step` sends the call's text to `server.step` without listing the valid
actions (the `valid_actions` tool lists them when asked). Text that is not a call, an
unknown tool, control characters, over 200 characters or `reset task` is an observation
with `valid=False` and never reaches the simulator; an action the simulator does not
understand ("No known action matches that input.") comes back `valid=False` too. If the
simulator fails, the step says so and ends the episode; nothing raises.

Verification: `completed` (the task's score reached 100), `not_failed` (the score did not go
negative: focusing on the wrong thing fails a task) and one check per sequential subgoal of
the task, `subgoal(<its description>)`, read from the simulator's goal progress. A failed
`completed` names the gold actions never run. Score: the task's score / 100 (0 when failed).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from distillery.envs.scienceworld import engine
from distillery.envs.scienceworld.commands import BLOCKED, TOOL_SPECS, command_error, to_command
from distillery.envs.text_game import MAX_NEXT_SHOWN, engine_failed, open_step, remaining_gold
from distillery.types import CheckResult, StepResult, Task, Verification

SIMULATOR = "simulator"     # what a failure message names
NO_MATCH = "No known action matches that input."
MAX_VALID_SHOWN = 200
_SUBGOAL = re.compile(r"^\d+\t(true|false)\t\s*\S+\t(.*)$")


def subgoals(progress: str) -> list[tuple[str, bool]]:
    """(description, done) of each sequential subgoal in the simulator's goal-progress text."""
    out = []
    section = ""
    for line in progress.splitlines():
        if line.startswith("Sequential Subgoals"):
            section = "sequential"
        elif line.startswith("Unordered and Optional"):
            section = "optional"
        elif section == "sequential" and (m := _SUBGOAL.match(line)):
            out.append((m[2].strip(), m[1] == "true"))
    return out


class ScienceWorldEnv:
    """A ScienceWorld task variation behind the environment protocol (`envs.base.Environment`)."""

    name = "scienceworld"

    def __init__(self) -> None:
        self._sim: Any = engine.acquire()
        self.task: Task | None = None
        self._played: list[str] = []
        self._score = 0.0
        self._completed = False
        self._obs = ""
        self._broken = ""
        self._hash = ""

    # ---- protocol -------------------------------------------------------------------

    def reset(self, task: Task) -> str:
        if self._sim is None:
            self._sim = engine.acquire()
        st = task.initial_state
        engine.load(self._sim, str(st["task"]), int(st["variation"]), str(st.get("simplification", "")))
        self.task = task
        self._played = []
        self._broken = ""
        obs = str(self._sim.server.step("look around"))
        self._read_state()
        desc = str(self._sim.server.getTaskDescription()).strip()
        return f"{desc}\n\n{obs}".strip()

    def step(self, action_text: Any) -> StepResult:
        if self.task is None or self._sim is None:
            return StepResult("No task: call reset first.", 0.0, True, valid=False, error="no task")
        opened = open_step(action_text, TOOL_SPECS, self.state_hash, self._broken, SIMULATOR)
        if isinstance(opened, StepResult):
            return opened
        call, args_json = opened
        try:
            if call.tool == "valid_actions":
                acts = sorted(str(a) for a in self._sim.server.getValidActionObjectCombinations())
                shown = acts[:MAX_VALID_SHOWN]
                more = f"\n(and {len(acts) - len(shown)} more)" if len(acts) > len(shown) else ""
                return StepResult("Valid actions here:\n" + "\n".join(shown) + more, 0.0, False, tool=call.tool,
                                  args_json=args_json, state_hash=self._hash)
            cmd = to_command(call)
            bad = command_error(cmd) or (f"'{cmd}' is not allowed in an episode" if cmd in BLOCKED else "")
            if bad:
                return StepResult(f"Invalid action: {bad}", 0.0, False, tool=call.tool, args_json=args_json,
                                  valid=False, error=bad, state_hash=self._hash)
            obs = str(self._sim.server.step(cmd))
            if obs.strip() == NO_MATCH:         # the parser refused it: nothing in the world changed
                return StepResult(obs, 0.0, False, tool=call.tool, args_json=args_json, valid=False,
                                  error=f"the simulator does not understand '{cmd}'", state_hash=self._hash)
            self._read_state()
        except Exception as e:  # noqa: BLE001 - a simulator failure is the episode's observation, not a raise
            self._broken = f"{type(e).__name__}: {str(e)[:200]}"
            return engine_failed(self._broken, call.tool, args_json, self._hash, SIMULATOR)
        self._played.append(cmd)
        done = self._completed or self._score < 0
        return StepResult(obs.strip() or "(nothing happens)", 0.0, done, tool=call.tool, args_json=args_json,
                          state_hash=self._hash)

    def verify(self) -> Verification:
        assert self.task is not None, "verify before reset"
        failed = self._score < 0
        done = self._score >= 100 and not failed
        gold = [to_command(c) for c in self.task.reference_solution]
        left = remaining_gold(gold, self._played)
        shown = left[:MAX_NEXT_SHOWN]
        checks = [CheckResult("completed" if done or not shown else f"completed(next={' | '.join(shown)})",
                              "completed", done,
                              "" if done else f"score {self._score:.0f} of 100; gold actions never run: "
                              + ("; ".join(left) or "none")),
                  CheckResult("not_failed", "not_failed", not failed,
                              "the task failed (its score went negative)" if failed else "")]
        progress = ""
        if self._sim is not None and not self._broken:
            try:
                progress = str(self._sim.server.getGoalProgressStr())
            except Exception as e:  # noqa: BLE001 - the subgoals are unreadable: say so in the checks
                progress = ""
                self._broken = f"{type(e).__name__}: {str(e)[:200]}"
        for desc, ok in subgoals(progress):
            checks.append(CheckResult(f"subgoal({desc})", "subgoal", ok, "" if ok else f"subgoal not reached: {desc}"))
        score = 0.0 if failed else min(max(self._score / 100.0, 0.0), 1.0)
        return Verification(score, done, checks)

    def state_hash(self) -> str:
        return self._hash

    def close(self) -> None:
        engine.release(self._sim)
        self._sim = None

    # ---- helpers --------------------------------------------------------------------

    def _read_state(self) -> None:
        server = self._sim.server
        self._score = round(100 * float(server.getScore()), 3)
        self._completed = bool(server.getCompleted())
        # The simulator lists a room's contents in no fixed order: the lines are sorted.
        look = sorted(str(server.freeActionLook()).splitlines())
        inv = sorted(str(server.freeActionInventory()).splitlines())
        blob = "\x1f".join([*look, "\x1e", *inv, str(self._score), str(self._completed), self._broken])
        self._hash = hashlib.sha256(blob.encode("utf-8", "backslashreplace")).hexdigest()[:16]

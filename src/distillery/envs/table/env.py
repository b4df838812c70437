"""The `table` environment: one table and one question per task; the policy writes a chain
of steps (`chains` grammar) and the environment verifies it step by step.

The action is the chain itself (``look r1 A = 12 ; ... ; answer 59``), as raw text or as the
tool call ``chain(steps="...")``. One action ends the episode. The reward is the outcome
(1 when the answer is right); the observation lists the rule critic's verdict on each step.
`step` never raises: text that is not a chain comes back as invalid steps with reasons.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from distillery.envs.actions import parse_action, utf8_error
from distillery.envs.base import ToolParam, ToolSpec
from distillery.envs.table.chains import ChainVerdict, Item, Table, verify_chain
from distillery.types import CheckResult, StepResult, Task, Verification

TOOL_SPECS = (ToolSpec("chain", "write the whole chain of steps, separated by ';', ending with 'answer <number>'",
                       (ToolParam("steps", "string", "e.g. look r3 B = 47 ; add 47 12 = 59 ; answer 59"),)),)


def item_from_state(state: dict[str, Any]) -> tuple[Table, Item]:
    """The table and gold item of a task's initial state; a malformed state raises
    ValueError naming the field."""
    try:
        table = Table.from_json(state["table"])
        cells = tuple((int(r), int(c)) for r, c in state["cells"])
        item = Item(str(state["kind"]), str(state["question"]), str(state["chain"]), cells, int(state["answer"]),
                    bool(state.get("shortcut", False)))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"table task state: {e}") from e
    return table, item


def state_of(table: Table, item: Item) -> dict[str, Any]:
    return {"table": table.to_json(), "kind": item.kind, "question": item.question, "chain": item.chain,
            "cells": [list(c) for c in item.cells], "answer": item.answer, "shortcut": item.shortcut}


def describe(verdict: ChainVerdict) -> str:
    lines = [f"step {i + 1}: {'ok' if s.valid else 'invalid: ' + s.reason}" for i, s in enumerate(verdict.steps)]
    lines.append(f"answer: {'right' if verdict.correct else 'wrong' if verdict.has_answer else 'none'}; "
                 f"process: {'valid' if verdict.valid else 'invalid'}")
    return "\n".join(lines)


class TableEnv:
    name = "table"

    def __init__(self, **_: Any) -> None:
        self.table: Table | None = None
        self.item: Item | None = None
        self.verdict: ChainVerdict | None = None

    def reset(self, task: Task) -> str:
        self.table, self.item = item_from_state(task.initial_state)
        self.verdict = None
        return f"{task.instruction}\n(the table is the image; answer with a chain of steps ending 'answer <n>')"

    def _chain_text(self, action_text: Any) -> str:
        if not isinstance(action_text, str) or utf8_error(action_text):
            return ""
        stripped = action_text.strip()
        if stripped.startswith(("chain(", "{")):
            parsed = parse_action(stripped, TOOL_SPECS)
            if parsed.valid and parsed.call is not None:
                steps = parsed.call.args.get("steps", "")
                return steps if isinstance(steps, str) else ""
        return action_text

    def step(self, action_text: Any) -> StepResult:
        if self.table is None or self.item is None:
            return StepResult("no task: call reset first", 0.0, True, tool="chain", valid=False,
                              error="no task", state_hash=self.state_hash())
        if self.verdict is not None:
            return StepResult("the chain was already answered; the episode is over", 0.0, True, tool="chain",
                              valid=False, error="episode over", state_hash=self.state_hash())
        text = self._chain_text(action_text)
        self.verdict = verify_chain(self.table, self.item, text)
        why = "; ".join(self.verdict.reasons())
        return StepResult(describe(self.verdict), 1.0 if self.verdict.correct else 0.0, True, tool="chain",
                          args_json=json.dumps({"steps": text[:2000]}), valid=self.verdict.valid,
                          error=why[:2000], state_hash=self.state_hash())

    def verify(self) -> Verification:
        v = self.verdict
        if v is None:
            return Verification(0.0, False, [CheckResult("answer", "answer", False, "no chain written")])
        checks = [CheckResult("answer", "answer", v.correct, "" if v.correct else "wrong or missing answer"),
                  CheckResult("process", "process", v.valid, "; ".join(v.reasons())[:2000])]
        return Verification(1.0 if v.correct else 0.0, v.correct, checks)

    def state_hash(self) -> str:
        blob = json.dumps([self.table.to_json() if self.table else None,
                           self.item.chain if self.item else None,
                           [s.text for s in self.verdict.steps] if self.verdict else None])
        return hashlib.sha256(blob.encode("utf-8", "replace")).hexdigest()[:16]

    def close(self) -> None:
        self.table = self.item = self.verdict = None

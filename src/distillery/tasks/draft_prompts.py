"""The drafting prompts, as data: templates with named slots, and the functions that fill them
from an environment's declarations (description, tools, check types, state fields, example).

`first_messages(hint, env)` opens a conversation; `repair_message(reasons)` is the user turn
that feeds a verdict back. Nothing else in `distillery.tasks` writes prompt text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from distillery.envs.base import env_spec
from distillery.tasks.schema import DRAFT_FIELDS, REQUIRED_FIELDS, Reason, draft_format

SYSTEM = (
    "You write tasks for testing computer-use agents. A task is JSON data only: an instruction, "
    "the initial state of a sandboxed environment, a reference solution as tool calls, and "
    "declarative checks over the final state. Nothing you write is ever executed: never put code, "
    "scripts, shell commands, queries or templates in any field. Reply with one JSON object."
)

USER = """\
Environment "{env}": {description}

Hint: {hint}

Write one task for this hint as a JSON object with the fields:
{fields}

The initial state ("initial_state") has these parts:
{state}

Tools the agent can call (the reference solution calls them as {{"tool": NAME, "args": {{...}}}}):
{tools}

Check types (the only ones that exist; each check is {{"type": NAME, ...its arguments}}):
{checks}

Rules:
- The checks must all pass after the reference solution and at least one must fail on the untouched state.
- Every task carries these checks: {required}. An unchanged_except check lists exactly what the task may change, so collateral damage fails.
- Put distractors in the state (other files, mail, people, events) so that guessing cannot succeed.
- Paths are relative to the home folder: never absolute, never "..".
- Keep the state small: only what the task and its distractors need.
- The instruction says what the user wants, not the tool calls; it may leave out what the state shows.

An example, for the hint "{example_hint}":
{example}

Reply with the JSON object of your task only."""

REPAIR = """\
Your draft was rejected:
{reasons}

Fix every problem above and reply with the whole corrected JSON object only."""

FIELD_LINE = '- "{name}"{optional}: {description}'
STATE_LINE = '- "{name}"{optional}: {description}'
TOOL_LINE = "- {signature}: {description}"
CHECK_LINE = "- {type}({args}): {description}"
REASON_LINE = "- {reason}"


def _state_lines(schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    lines = []
    for name, sub in schema.get("properties", {}).items():
        desc = sub.get("description", "")
        item = sub.get("items", {})
        if isinstance(item, dict) and item.get("properties"):
            fields = ", ".join(k + ("" if k in item.get("required", []) else "?") for k in item["properties"])
            desc = f"{desc}: a list of {{{fields}}}"
        lines.append(STATE_LINE.format(name=name, optional="" if name in required else " (optional)",
                                       description=desc))
    return "\n".join(lines)


def _check_lines(check_schemas: dict[str, dict[str, Any]]) -> str:
    lines = []
    for type_, schema in check_schemas.items():
        required = set(schema.get("required", []))
        args = ", ".join(k + ("" if k in required else "?") for k in schema.get("properties", {}) if k != "type")
        lines.append(CHECK_LINE.format(type=type_, args=args, description=schema.get("description", "")))
    return "\n".join(lines)


def user_prompt(hint: str, env: str) -> str:
    """The first user message: the hint and everything the environment declares."""
    spec = env_spec(env)
    fmt = draft_format(env)
    fields = "\n".join(FIELD_LINE.format(name=n, optional="" if n in REQUIRED_FIELDS else " (optional)",
                                         description=d) for n, d in DRAFT_FIELDS.items())
    tools = "\n".join(TOOL_LINE.format(signature=s.signature(), description=s.description) for s in spec.tools)
    return USER.format(
        env=env, description=spec.description, hint=hint.strip(), fields=fields,
        state=_state_lines(fmt.state_schema), tools=tools, checks=_check_lines(fmt.check_schemas),
        required=", ".join(repr(c) for c in fmt.required_checks) or "no required",
        example_hint=fmt.example_hint, example=json.dumps(fmt.example, ensure_ascii=False),
    )


def first_messages(hint: str, env: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_prompt(hint, env)}]


def repair_message(reasons: Sequence[Reason]) -> dict[str, str]:
    """The user turn that feeds a rejection back, one line per reason."""
    return {"role": "user", "content": REPAIR.format(
        reasons="\n".join(REASON_LINE.format(reason=str(r)) for r in reasons))}

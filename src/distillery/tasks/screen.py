"""Judge a drafting model's reply without running anything in it.

`screen_reply(reply, env)` finds the JSON draft in the reply (prose, code fences and
`<think>` blocks around it are fine), then rejects, each with a `Reason`:
- no JSON object (`not_json`), a reply or state over its size bound (`oversized`);
- a draft that departs from the environment's draft format (`schema`, `unknown_check`,
  `unknown_tool`, `outside_sandbox`, `missing_check`; see `tasks.schema`);
- code in any field or key (`code`): a draft is data, and text that reads like a program,
  a shell command, a query or a template has no business in a personal workspace's task.

Only a draft this screen passes is ever built in an environment (`tasks.draft`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distillery.io import json_error
from distillery.tasks.schema import (
    DRAFT_FIELDS,
    MAX_REASONS,
    Reason,
    draft_format,
    structure_problems,
)

MAX_REPLY_CHARS = 200_000

# What code looks like in a draft's text. Each pattern is specific enough that the text of
# an ordinary workspace (notes, mail, invoices, titles) does not match it; a test runs them
# over every registered family's tasks.
CODE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((what, re.compile(rx)) for what, rx in (
    ("a Python dunder name", r"__\w+__"),
    ("an import statement", r"(?m)^\s*import\s+[\w.]+(?:\s+as\s+\w+)?\s*;?\s*$|\bfrom\s+[\w.]+\s+import\s+[\w*(]|"
                            r"\b(?:import|require)\s*\(?\s*['\"]?(?:os|sys|subprocess|shutil|socket|ctypes|pickle|"
                            r"importlib|builtins|child_process|fs)\b"),
    ("a call of eval, exec or a process function", r"\b(?:eval|exec|execfile|compile|system|popen|spawn\w*|"
                                                    r"execv\w*|getattr|setattr)\("),
    ("a module of the host system", r"\b(?:os|sys|subprocess|shutil|importlib|builtins|child_process)\s*\.\s*\w+"),
    ("a function definition", r"(?m)^\s*def\s+\w+\s*\(|\bdef\s+\w+\s*\([^)]*\)\s*:|\blambda\s+[\w, ]*:|\bfunction\s*\w*\s*\([^)]*\)\s*\{|=>\s*\{"),
    ("a shell command", r"\$\(|\brm\s+-[a-zA-Z]*[rf]|\bsudo\s+\w|\b(?:curl|wget)\s+(?:-\S+\s+)*https?://|"
                        r"\b(?:ba|z)?sh\s+-c\b|\|\s*(?:ba|z)?sh\b|\bchmod\s+[+0-7]|#!\s*/"),
    ("a script or markup handler", r"(?i)<\s*script\b|<\?php|javascript\s*:|\bon(?:error|load|click)\s*="),
    ("a SQL statement", r"(?i)\b(?:drop|alter|truncate)\s+table\b|\bunion\s+(?:all\s+)?select\b|;\s*--|/\*.*?\*/"),
    ("a template expression", r"\{\{.*?\}\}|\{%.*?%\}|\$\{[^}]*\}"),
))


@dataclass
class Screened:
    """A reply, screened: the draft found in it (None when none), its JSON text, and the
    reasons it is rejected (empty: it may be built and run)."""

    draft: dict[str, Any] | None
    draft_json: str
    reasons: list[Reason] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.draft is not None and not self.reasons


_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.S)


def extract_json(reply: str) -> tuple[dict[str, Any] | None, str]:
    """The draft object in a model's reply, or (None, why not).

    Fenced blocks are tried first, then the whole text; the first JSON object with a draft
    field is the draft. A reply whose JSON does not parse is told where it broke.
    """
    text = _THINK.sub("", reply)
    sources = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    first_error = ""
    found_other = False
    for source in sources:
        i = source.find("{")
        while i >= 0:
            try:
                obj, end = decoder.raw_decode(source, i)
            except json.JSONDecodeError as e:
                if not first_error:
                    first_error = (f"the JSON object starting on line {_line(source, i)} does not parse: "
                                   f"{e.msg} (line {e.lineno}, column {e.colno})")
                # Objects that start inside the broken one are parts of it, never the draft:
                # skipping them keeps the scan linear in the reply's length.
                i = source.find("{", max(i + 1, e.pos))
                continue
            except ValueError as e:     # a number too long to convert: no position to skip to
                if not first_error:
                    first_error = (f"the JSON object starting on line {_line(source, i)} does not parse: "
                                   f"{json_error(e)}")
                i = source.find("{", i + 1)
                continue
            except RecursionError:
                return None, "the JSON is nested too deeply"
            if isinstance(obj, dict) and set(obj) & set(DRAFT_FIELDS):
                return obj, ""
            found_other = found_other or isinstance(obj, dict)
            i = source.find("{", end if isinstance(obj, dict) else i + 1)
    if first_error:
        return None, first_error
    if found_other:
        return None, f"no JSON object with the draft's fields ({', '.join(DRAFT_FIELDS)})"
    return None, "the reply holds no JSON object"


def _line(text: str, i: int) -> int:
    return text.count("\n", 0, i) + 1


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value (object keys included), with where it sits."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield f"{where} (a key)", str(k)
            yield from _strings(v, f"{where}.{k}" if str(k).isidentifier() else f"{where}[{str(k)!r}]")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


def code_problems(draft: dict[str, Any]) -> list[Reason]:
    """One Reason per field holding text that reads like code (the first pattern it matches)."""
    out = []
    for name in DRAFT_FIELDS:
        if name not in draft:
            continue
        for where, text in _strings(draft[name], name):
            for what, pattern in CODE_PATTERNS:
                m = pattern.search(text)
                if m:
                    out.append(Reason("code", f"{where}: {what} ({m.group(0)[:40]!r}); a draft is data, not code"))
                    break
    return out


def screen_draft(draft: Any, env: str) -> list[Reason]:
    """Everything wrong with a parsed draft that can be seen without building it."""
    reasons = structure_problems(draft, env)
    if isinstance(draft, dict):
        state = draft.get("initial_state")
        limit = draft_format(env).max_state_chars
        size = len(json.dumps(state, ensure_ascii=False)) if state is not None else 0
        if size > limit:
            reasons.insert(0, Reason("oversized", f"initial_state is {size} characters of JSON; the limit is {limit}"))
        reasons += code_problems(draft)
    return reasons[:MAX_REASONS]


def screen_reply(reply: str, env: str) -> Screened:
    """Find the draft in `reply` and screen it (see the module docstring)."""
    if len(reply) > MAX_REPLY_CHARS:
        return Screened(None, "", [Reason("oversized", f"the reply is {len(reply)} characters; "
                                                       f"the limit is {MAX_REPLY_CHARS}")])
    draft, why = extract_json(reply)
    if draft is None:
        return Screened(None, "", [Reason("not_json", why)])
    return Screened(draft, json.dumps(draft, ensure_ascii=False, sort_keys=True), screen_draft(draft, env))

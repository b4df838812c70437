"""Text <-> tool call. One pure function each way, shared by every policy and environment.

The text syntax is a single call with keyword (or positional) literal arguments:

    send_mail(to="ann.lee@acme.com", subject="Budget", body="See you.\\n\\nCheers, Sam")

It is parsed with `ast` into a syntax tree that is inspected, never evaluated: only a call
of a bare name with string/integer literals is accepted, so no text an agent writes can
execute. A JSON object `{"tool": ..., "args": {...}}` is accepted too (some LLMs prefer it).
"""

from __future__ import annotations

import ast
import json
import warnings
from collections.abc import Sequence
from typing import Any

from distillery.envs.base import ToolSpec
from distillery.types import ParsedAction, ToolCall

MAX_ACTION_CHARS = 8192


def format_call(call: ToolCall) -> str:
    """Canonical text of a call: keyword arguments in the order given, JSON string escapes."""
    parts = []
    for k, v in call.args.items():
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            v = str(v)
        parts.append(f"{k}={json.dumps(v, ensure_ascii=False) if isinstance(v, str) else v}")
    return f"{call.tool}({', '.join(parts)})"


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, int):
        return -node.operand.value
    raise ValueError(f"argument must be a string or integer literal, not `{ast.unparse(node)}`")


def _extract(text: str) -> str:
    """The action is the first non-empty line; a model may add prose after it."""
    text = text.strip()
    if text.startswith("{"):
        return text
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _bind(name: str, pos: list[Any], kw: dict[str, Any], specs: dict[str, ToolSpec]) -> ParsedAction:
    spec = specs.get(name)
    if spec is None:
        return ParsedAction(None, False, f"unknown tool '{name}'; tools: {', '.join(sorted(specs))}")
    params = [p.name for p in spec.params]
    if len(pos) > len(params):
        return ParsedAction(None, False, f"{name} takes at most {len(params)} arguments, got {len(pos)}")
    args: dict[str, Any] = dict(zip(params, pos, strict=False))
    for k, v in kw.items():
        if k in args:
            return ParsedAction(None, False, f"{name}: argument '{k}' given twice")
        args[k] = v
    unknown = [k for k in args if k not in params]
    if unknown:
        return ParsedAction(None, False, f"{name}: unknown argument(s) {unknown}; expected {spec.signature()}")
    for p in spec.params:
        if p.name not in args:
            if p.required:
                return ParsedAction(None, False, f"{name}: missing argument '{p.name}'; expected {spec.signature()}")
            continue
        v = args[p.name]
        if p.type == "integer":
            if isinstance(v, str) and v.strip().lstrip("-").isdigit():
                args[p.name] = int(v.strip())
            elif not isinstance(v, int):
                return ParsedAction(None, False, f"{name}: '{p.name}' must be an integer, got {v!r}")
        elif not isinstance(v, str):
            args[p.name] = str(v)
    ordered = {p.name: args[p.name] for p in spec.params if p.name in args}
    return ParsedAction(ToolCall(name, ordered), True)


def parse_action(text: str, specs: Sequence[ToolSpec]) -> ParsedAction:
    """Parse agent text into a call of one of `specs`; never raises.

    Returns `ParsedAction(call, valid=True)` or `ParsedAction(None, valid=False, error)`
    where `error` tells the agent what was wrong and what was expected.
    """
    by_name = {s.name: s for s in specs}
    if len(text) > MAX_ACTION_CHARS:
        return ParsedAction(None, False, f"action too long ({len(text)} chars > {MAX_ACTION_CHARS})")
    src = _extract(text)
    if not src:
        return ParsedAction(None, False, "empty action; write one tool call such as finish()")
    if src.startswith("{"):
        try:
            obj = json.loads(src)
        except json.JSONDecodeError as e:
            return ParsedAction(None, False, f"malformed JSON action: {e.msg}")
        if not isinstance(obj, dict) or not isinstance(obj.get("tool", obj.get("name")), str):
            return ParsedAction(None, False, 'a JSON action needs "tool" and "args"')
        args = obj.get("args", obj.get("arguments", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError as e:
                return ParsedAction(None, False, f"malformed JSON arguments: {e.msg}")
        if not isinstance(args, dict):
            return ParsedAction(None, False, '"args" must be an object')
        for k, v in args.items():
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                return ParsedAction(None, False, f"argument '{k}' must be a string or integer")
        return _bind(obj.get("tool", obj.get("name")), [], args, by_name)
    try:
        # Model output is often malformed: its SyntaxWarnings (e.g. "invalid decimal
        # literal") are not ours to print; the error below tells the agent instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        return ParsedAction(None, False, f"malformed action ({e.msg}); expected tool(arg=\"value\", ...)")
    node = tree.body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return ParsedAction(None, False, "expected a single tool call such as list_dir(path=\"downloads\")")
    try:
        pos = [_literal(a) for a in node.args]
        kw = {}
        for k in node.keywords:
            if k.arg is None:
                raise ValueError("**kwargs are not allowed")
            kw[k.arg] = _literal(k.value)
    except ValueError as e:
        return ParsedAction(None, False, f"{node.func.id}: {e}")
    return _bind(node.func.id, pos, kw, by_name)

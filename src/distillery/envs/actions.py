"""Text <-> tool call. One pure function each way, shared by every policy and environment.

The text syntax is a single call with keyword (or positional) literal arguments:

    send_mail(to="ann.lee@acme.com", subject="Budget", body="See you.\\n\\nCheers, Sam")

It is parsed with `ast` into a syntax tree that is inspected, never evaluated: only a call
of a bare name with string/integer literals is accepted, so no text an agent writes can
execute. A JSON object `{"tool": ..., "args": {...}}` is accepted too (some LLMs prefer it).

`parse_action` is total: whatever it is given (text that is not valid UTF-8, JSON or
expressions nested thousands deep, numbers too long to convert, not a string at all) it
answers with a `ParsedAction`, never an exception. The bounds below are checked before the
text reaches `json` or `ast`, whose recursion would otherwise depend on the caller's stack.
"""

from __future__ import annotations

import ast
import io
import json
import keyword
import re
import tokenize
import warnings
from collections.abc import Sequence
from typing import Any

from distillery.envs.base import ToolSpec
from distillery.types import ParsedAction, ToolCall

MAX_ACTION_CHARS = 8192
MAX_JSON_DEPTH = 32        # a JSON action needs 2 levels ({"tool", "args": {...}})
MAX_OPERATORS = 200        # operator and keyword tokens in a call; a valid one has ~15
# Python refuses to print integers with more digits than this (sys.int_info.default_max_str_digits);
# a fixed bound, so the answer does not depend on a process-wide setting.
_INT_LIMIT = 10 ** 4300


def utf8_error(text: str) -> str:
    """'' if `text` is valid UTF-8 text, else what is wrong with it (lone surrogates, which
    neither files, SQLite nor parquet can store)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone surrogate (U+{ord(text[e.start]):04X}) at character {e.start}"
    return ""


def _shown(text: str) -> str:
    """Text safe to put in an error message: undecodable characters as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def format_call(call: ToolCall) -> str:
    """Canonical text of a call: keyword arguments in the order given, JSON string escapes."""
    parts = []
    for k, v in call.args.items():
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            v = str(v)
        parts.append(f"{k}={json.dumps(v, ensure_ascii=False) if isinstance(v, str) else v}")
    return f"{call.tool}({', '.join(parts)})"


def _literal(node: ast.expr, src: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, int):
        return -node.operand.value
    raise ValueError(f"argument must be a string or integer literal, not `{_unparse(node, src)}`")


def _unparse(node: ast.expr, src: str) -> str:
    try:
        return ast.unparse(node)
    except RecursionError:
        # Nested too deep for the unparser: quote the source instead (clipped).
        text = ast.get_source_segment(src, node) or "?"
        return text if len(text) <= 80 else text[:77] + "..."


def _json_depth(text: str, limit: int) -> int:
    """The bracket depth of JSON text, counted up to `limit` + 1 (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif ch in "]}":
            depth -= 1
    return deepest


def _loads(text: str, what: str) -> tuple[Any, str]:
    """json.loads within the depth bound: (object, '') or (None, the error)."""
    if _json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return None, f"malformed JSON {what}: nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        return json.loads(text), ""
    except json.JSONDecodeError as e:
        return None, f"malformed JSON {what}: {e.msg}"
    except ValueError as e:   # e.g. a number longer than Python converts
        return None, f"malformed JSON {what}: {_shown(str(e))[:120]}"


def _too_complex(src: str) -> bool:
    """More operator or keyword tokens than any call of literals has: `ast` would build (and
    recurse through) a tree that deep. Tokenizing is iterative; its errors are left for
    `ast.parse` to report."""
    n = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.OP or (tok.type == tokenize.NAME and keyword.iskeyword(tok.string)):
                n += 1
                if n > MAX_OPERATORS:
                    return True
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass
    return False


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
    for v in [name, *kw, *pos, *kw.values()]:
        bad = utf8_error(v) if isinstance(v, str) else ""
        if bad:
            return ParsedAction(None, False, f"{_shown(name)}: an argument is not valid UTF-8 text ({bad})")
        if isinstance(v, int) and not -_INT_LIMIT < v < _INT_LIMIT:
            return ParsedAction(None, False, f"{_shown(name)}: an integer argument has more than 4300 digits")
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
                # isdigit() admits what int() refuses ("²", "--5", too many digits).
                try:
                    number = int(v.strip())
                except ValueError:
                    number = None
                if number is None or not -_INT_LIMIT < number < _INT_LIMIT:
                    return ParsedAction(None, False, f"{name}: '{p.name}' must be an integer, "
                                                     f"got {_clip(v)!r}")
                args[p.name] = number
            elif not isinstance(v, int):
                return ParsedAction(None, False, f"{name}: '{p.name}' must be an integer, got {v!r}")
        elif not isinstance(v, str):
            args[p.name] = str(v)
    ordered = {p.name: args[p.name] for p in spec.params if p.name in args}
    return ParsedAction(ToolCall(name, ordered), True)


# Most actions are a call in `format_call`'s form: an ASCII name, then literal arguments,
# strings without a backslash or their own quote, integers in plain decimal. What `ast` makes
# of such text is plain to see, so it is read without building a syntax tree (tests check
# both readings agree).
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SIMPLE_CALL = re.compile(rf"({_NAME})[ \t]*\((.*)\)", re.DOTALL)
_SIMPLE_ARG = re.compile(
    rf"[ \t]*(?:({_NAME})[ \t]*=[ \t]*)?(\"[^\"\\\x00]*\"|'[^'\\\x00]*'|-?(?:0|[1-9][0-9]*))[ \t]*(,|$)")


def simple_call(src: str) -> tuple[str, list[Any], dict[str, Any]] | None:
    """(name, positional values, keyword values) of a call in the simple form above, or None
    when `src` is anything else (left for `ast` to read, or to refuse with its reason)."""
    if "\x00" in src or "\n" in src or "\r" in src:
        return None
    m = _SIMPLE_CALL.fullmatch(src)
    if m is None or keyword.iskeyword(m[1]):
        return None
    inner, pos, kw = m[2], [], {}
    at, end = 0, len(inner)
    if not inner.strip(" \t"):
        at = end
    while at < end:
        a = _SIMPLE_ARG.match(inner, at)
        if a is None:
            return None
        key, text, comma = a[1], a[2], a[3]
        value: Any = text[1:-1] if text[0] in "\"'" else int(text)
        if key is None:
            if kw:      # a positional argument after a keyword one: a SyntaxError for ast
                return None
            pos.append(value)
        elif keyword.iskeyword(key):
            return None
        else:
            kw[key] = value     # a repeated keyword: the last one, as in the syntax tree
        at = a.end()
        if comma and not inner[at:].strip(" \t"):
            at = end        # a trailing comma
        elif not comma and at < end:
            return None
    return m[1], pos, kw


def _clip(text: str, limit: int = 80) -> str:
    text = _shown(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_action(text: Any, specs: Sequence[ToolSpec]) -> ParsedAction:
    """Parse agent text into a call of one of `specs`; never raises, whatever `text` is.

    Returns `ParsedAction(call, valid=True)` or `ParsedAction(None, valid=False, error)`
    where `error` tells the agent what was wrong and what was expected. A valid call's
    string arguments are valid UTF-8 text and its integers have at most 4300 digits.
    """
    by_name = {s.name: s for s in specs}
    if not isinstance(text, str):
        return ParsedAction(None, False, f"an action must be text, not {type(text).__name__}; "
                                         "write one tool call such as finish()")
    if len(text) > MAX_ACTION_CHARS:
        return ParsedAction(None, False, f"action too long ({len(text)} chars > {MAX_ACTION_CHARS})")
    bad = utf8_error(text)
    if bad:
        return ParsedAction(None, False, f"the action is not valid UTF-8 text ({bad})")
    src = _extract(text)
    if not src:
        return ParsedAction(None, False, "empty action; write one tool call such as finish()")
    if src.startswith("{"):
        obj, error = _loads(src, "action")
        if error:
            return ParsedAction(None, False, error)
        if not isinstance(obj, dict) or not isinstance(obj.get("tool", obj.get("name")), str):
            return ParsedAction(None, False, 'a JSON action needs "tool" and "args"')
        args = obj.get("args", obj.get("arguments", {}))
        if isinstance(args, str):
            args, error = _loads(args, "arguments")
            if error:
                return ParsedAction(None, False, error)
        if not isinstance(args, dict):
            return ParsedAction(None, False, '"args" must be an object')
        for k, v in args.items():
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                return ParsedAction(None, False, f"argument '{_shown(k)}' must be a string or integer")
        return _bind(obj.get("tool", obj.get("name")), [], args, by_name)
    if len(src) <= MAX_OPERATORS:
        # Every operator or keyword token is at least one character: a short action cannot
        # have too many, so it is not tokenized; one in the simple form needs no parser.
        simple = simple_call(src)
        if simple is not None:
            return _bind(*simple, by_name)
    elif _too_complex(src):
        return ParsedAction(None, False, f"malformed action (more than {MAX_OPERATORS} operators); "
                                         'expected tool(arg="value", ...)')
    return _parse_tree(src, by_name)


def _parse_tree(src: str, by_name: dict[str, ToolSpec]) -> ParsedAction:
    """Read a call through Python's own parser: the syntax tree is inspected, never evaluated."""
    try:
        # Model output is often malformed: its SyntaxWarnings (e.g. "invalid decimal
        # literal") are not ours to print; the error below tells the agent instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        return ParsedAction(None, False, f"malformed action ({e.msg}); expected tool(arg=\"value\", ...)")
    except (ValueError, RecursionError, MemoryError) as e:
        # Python 3.11 says ValueError for a NUL byte; the others are bounded above, kept
        # as a last line of defence.
        return ParsedAction(None, False, f"malformed action ({type(e).__name__}: {_clip(str(e))}); "
                                         'expected tool(arg="value", ...)')
    node = tree.body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return ParsedAction(None, False, "expected a single tool call such as list_dir(path=\"downloads\")")
    try:
        pos = [_literal(a, src) for a in node.args]
        kw = {}
        for k in node.keywords:
            if k.arg is None:
                raise ValueError("**kwargs are not allowed")
            kw[k.arg] = _literal(k.value, src)
    except ValueError as e:
        return ParsedAction(None, False, f"{node.func.id}: {e}")
    return _bind(node.func.id, pos, kw, by_name)

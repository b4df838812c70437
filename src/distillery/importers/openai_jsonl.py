"""OpenAI chat JSONL (the fine-tuning format) -> `RawRecord`s, one per non-blank line.

A line is `{"messages": [...], "tools": [...], "metadata": {...}}`. Messages have a `role`
(system, developer, user, assistant, tool) and `content` (a string, a list of content parts, or
null); an assistant message may carry `tool_calls` (`{"id", "type": "function", "function":
{"name", "arguments"}}`, `arguments` a JSON *string*), and a `tool` message answers one by its
`tool_call_id` (optionally with an `error` string: not OpenAI's, but how a log says the tool
failed). The format has no task id and no outcome: they come from the `metadata` block, or
from a side file of such blocks keyed by `sample_id` or `line` (docs/importing.md).

Every problem is reported against its line: a line that is not JSON (a truncated write), a
field of the wrong type, a metadata value of the wrong type, or text that is not valid Unicode
(a lone surrogate escape such as `\\ud800`) makes that line's record `malformed`; the other
lines are read as usual. A side file's mistakes are the user's to fix before anything is
imported (a row without a key, two rows for one record), except rows that match no record,
which the import reports (`SideFile.unused`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.importers.records import (
    Call,
    Message,
    Outcome,
    RawRecord,
    lone_surrogates,
    sha256_text,
)
from distillery.io import json_error

TEXT_PARTS = ("text", "input_text", "output_text", "refusal")
ENDED = ("finished", "limit", "truncated", "error")
_INT64_MAX = 2**63 - 1


def _number(v: Any) -> bool:
    """A JSON number a float can hold (an integer of hundreds of digits cannot)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _count(v: Any) -> bool:
    """An integer >= 0 that a table's 64-bit column can hold."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _INT64_MAX

# metadata key -> (what it must be, a check)
_META_TYPES: dict[str, tuple[str, Any]] = {
    "task_id": ("a string", lambda v: isinstance(v, str) and v != ""),
    "instruction": ("a string", lambda v: isinstance(v, str)),
    "env": ("a string", lambda v: isinstance(v, str)),
    "family": ("a string", lambda v: isinstance(v, str)),
    "split": ("a string", lambda v: isinstance(v, str)),
    "profile": ("a string", lambda v: isinstance(v, str)),
    "model": ("a string", lambda v: isinstance(v, str)),
    "policy": ("a string", lambda v: isinstance(v, str)),
    "success": ("true or false", lambda v: isinstance(v, bool)),
    "score": ("a number", _number),
    "ended": (f"one of {', '.join(ENDED)}", lambda v: v in ENDED),
    "limit": ("a string", lambda v: isinstance(v, str)),
    "error": ("a string", lambda v: isinstance(v, str)),
    "failed_checks": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "sample_id": ("a string or an integer", lambda v: isinstance(v, str | int) and not isinstance(v, bool)),
    "epoch": ("an integer >= 1", lambda v: _count(v) and v >= 1),
    "usage": ("{prompt_tokens, completion_tokens} integers",
              lambda v: isinstance(v, dict) and all(isinstance(v.get(k, 0), int) and 0 <= v.get(k, 0) <= _INT64_MAX
                                                    for k in ("prompt_tokens", "completion_tokens"))),
    "wall_s": ("a number >= 0", lambda v: _number(v) and v >= 0),
}


class _Malformed(Exception):
    """A field of the wrong type: the message says where and what was expected."""


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


# A side file's row is keyed by the record's line or its sample id: ("line", 3), ("sample_id", "x").
SideKey = tuple[str, int | str]


def _key_text(key: SideKey) -> str:
    kind, value = key
    return f"{kind} {value!r}" if kind == "sample_id" else f"{kind} {value}"


@dataclass
class SideFile:
    """A side file of metadata blocks (`read_outcomes`): key -> (its line in the side file, the
    block). `take` hands a record its block and notes the key, so that the rows no record took
    can be reported (`unused`): a mistyped key would otherwise be ignored without a word."""

    path: Path
    rows: dict[SideKey, tuple[int, dict[str, Any]]]
    taken: set[SideKey] = field(default_factory=set)

    def take(self, sample_id: str | None, line: int) -> dict[str, Any] | None:
        """The block for the record on `line` (with `sample_id` when its metadata gives one).
        Two rows for one record, one by sample id and one by line, are refused: which should win
        is the user's to say."""
        candidates: list[SideKey] = [("line", line)]
        if sample_id is not None:
            candidates.insert(0, ("sample_id", sample_id))
        keys = [k for k in candidates if k in self.rows]
        if len(keys) > 1:
            by_sample, by_line = keys
            raise ValueError(f"{self.path}:{self.rows[by_sample][0]} ({_key_text(by_sample)}) and "
                             f"{self.path}:{self.rows[by_line][0]} ({_key_text(by_line)}) are both rows for the "
                             f"record on line {line}: keep one")
        if not keys:
            return None
        self.taken.add(keys[0])
        return self.rows[keys[0]][1]

    def unused(self) -> list[str]:
        """The keys of the rows no record took, in the side file's order."""
        return [_key_text(k) for k in self.rows if k not in self.taken]


def _row_key(row: dict[str, Any]) -> SideKey | None:
    line, sample_id = row.get("line"), row.get("sample_id")
    if isinstance(line, int) and not isinstance(line, bool):
        return ("line", line)
    if isinstance(sample_id, str | int) and not isinstance(sample_id, bool):
        return ("sample_id", str(sample_id))     # 7 and "7" name the same record
    return None


def read_outcomes(path: str | Path) -> SideFile:
    """A side file of metadata blocks, one JSON object a line, each with `line` or `sample_id`.
    A row with neither, or a second row for a key, raises naming the side file's line(s)."""
    rows: dict[SideKey, tuple[int, dict[str, Any]]] = {}
    try:
        content = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from e
    for n, text in enumerate(content.splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({json_error(e)})") from e
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object, got {_kind(row)}")
        key = _row_key(row)
        if key is None:
            raise ValueError(f"{path}:{n}: a row needs \"sample_id\" (string or integer) or \"line\" (integer)")
        if key in rows:
            raise ValueError(f"{path}:{n}: a second row for {_key_text(key)} (the first is {path}:{rows[key][0]}): "
                             "keep one")
        rows[key] = (n, {k: v for k, v in row.items() if k != "line"})
    return SideFile(Path(path), rows)


def read_openai(path: str | Path, source: str, outcomes: SideFile | None = None) -> Iterator[RawRecord]:
    """The records of one JSONL file, in order. `source` is the name records carry; `outcomes`
    the side file whose blocks win over the lines' own metadata."""
    position = 0
    # Streamed line by line (binary, so a line that is not UTF-8 is reported, not fatal): a log
    # of millions of episodes is never held in memory whole.
    with Path(path).open("rb") as f:
        for n, raw in enumerate(f, 1):
            raw = raw.rstrip(b"\r\n")
            if n == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")     # a byte-order mark some editors write
            if not raw.strip():
                continue
            yield _record(raw, n, position, source, outcomes)
            position += 1


def count_records(path: str | Path) -> int:
    """How many records `read_openai` will yield (non-blank lines): a progress bar's total."""
    with Path(path).open("rb") as f:
        return sum(1 for line in f if line.strip())


def _record(raw: bytes, line: int, position: int, source: str, outcomes: SideFile | None) -> RawRecord:
    rec = RawRecord(format="openai", source=source, position=position, record=f"line {line}", line=line,
                    sample=f"L{line}", epoch=1, sha256=sha256_text(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        rec.malformed.append(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})")
        return rec
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        rec.malformed.append(f"not valid JSON ({e.msg} at column {e.colno} of {len(text)}): "
                             "a truncated or corrupted line")
        return rec
    except ValueError as e:     # e.g. a number too long to convert
        rec.malformed.append(f"not valid JSON ({e})")
        return rec
    # Checked before anything is copied into the record: a string holding one would fail the
    # writing of every table it reaches, and with it the whole import.
    not_unicode = lone_surrogates(obj)
    if not_unicode:
        rec.malformed += not_unicode
        return rec
    try:
        _fill(rec, obj, outcomes)
    except _Malformed as e:
        rec.malformed.append(str(e))
    return rec


def _fill(rec: RawRecord, obj: Any, outcomes: SideFile | None) -> None:
    if not isinstance(obj, dict):
        raise _Malformed(f"expected a JSON object with \"messages\", got {_kind(obj)}")
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        raise _Malformed(f"metadata: expected an object, got {_kind(meta)}")
    side = None
    if outcomes is not None and rec.line is not None:
        side = outcomes.take(str(meta["sample_id"]) if "sample_id" in meta else None, rec.line)
    if side is not None:
        meta = {**meta, **side}             # the side file's fields win
        rec.sha256 = sha256_text(rec.sha256 + json.dumps(side, sort_keys=True))
        _refuse_lone_surrogates(side, "metadata", in_file=outcomes.path.name)
    for key, (what, ok) in _META_TYPES.items():
        if key in meta and meta[key] is not None and not ok(meta[key]):
            raise _Malformed(f"metadata.{key}: expected {what}, got {_kind(meta[key])} {_clip(meta[key])}")
    rec.metadata = meta
    if "sample_id" in meta:
        rec.sample = str(meta["sample_id"])
    rec.epoch = int(meta.get("epoch") or 1)

    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise _Malformed(f"messages: expected a list, got {_kind(messages)}" if "messages" in obj
                         else "no \"messages\" list")
    rec.messages = [_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
    tools = obj.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise _Malformed(f"tools: expected a list of objects, got {_kind(tools)}")
    rec.tools = tools

    rec.instruction = meta.get("instruction")
    rec.task_id = meta.get("task_id") or ""
    for key in ("env", "family", "split", "profile", "model", "policy"):
        setattr(rec, key, meta.get(key) or "")
    usage = meta.get("usage") or {}
    rec.tokens_in, rec.tokens_out = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    rec.wall_s = float(meta.get("wall_s") or 0.0)
    ended = meta.get("ended") or "finished"
    if ended == "error" or meta.get("error"):
        rec.error = meta.get("error") or "the log says the run ended in an error"
    if ended in ("limit", "truncated") or meta.get("limit"):
        rec.limit = meta.get("limit") or ended
    rec.outcome = outcome_of(meta.get("success"), meta.get("score"), "metadata", meta.get("failed_checks") or [])


def outcome_of(success: bool | None, score: float | None, scorer: str, failed_checks: list[str]) -> Outcome:
    """An outcome from a success label and/or a score: each implies the other (success is a
    score of 1); a score outside [0, 1], or the two disagreeing, is a problem."""
    out = Outcome(scorer=scorer, failed_checks=list(failed_checks))
    if score is not None:
        score = float(score)
        if not math.isfinite(score) or not 0.0 <= score <= 1.0:
            out.problems.append(f"score {score!r} is outside [0, 1]")
            return out
    if success is not None and score is not None and success != (score == 1.0):
        out.problems.append(f"success {str(success).lower()} disagrees with score {score!r} (success is a score of 1)")
        return out
    out.success = success if success is not None else (score == 1.0 if score is not None else None)
    out.score = score if score is not None else (None if success is None else float(success))
    parts = [f"success={str(success).lower()}" if success is not None else "",
             f"score={score!r}" if score is not None else ""]
    out.value = ", ".join(p for p in parts if p)
    return out


def _message(m: Any, where: str) -> Message:
    if not isinstance(m, dict):
        raise _Malformed(f"{where}: expected an object, got {_kind(m)}")
    role = m.get("role")
    if not isinstance(role, str):
        raise _Malformed(f"{where}.role: expected a string, got {_kind(role)}")
    msg = Message(role=role, where=where)
    msg.text, msg.non_text = _content(m.get("content"), f"{where}.content")
    calls = m.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise _Malformed(f"{where}.tool_calls: expected a list, got {_kind(calls)}")
        msg.calls = [_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str):
            raise _Malformed(f"{where}.tool_call_id: expected a string, got {_kind(call_id)}")
        msg.call_id = call_id
        error = m.get("error")
        if error is not None and not isinstance(error, str):
            raise _Malformed(f"{where}.error: expected a string, got {_kind(error)}")
        msg.error = error or ""
    return msg


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise _Malformed(f"{where}: expected a string, a list of content parts or null, got {_kind(content)}")
    texts, other = [], []
    for k, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _Malformed(f"{where}[{k}]: expected a content part ({{\"type\": ...}}), got {_kind(part)}")
        if part["type"] in TEXT_PARTS:
            value = part.get(part["type"] if part["type"] == "refusal" else "text")
            if not isinstance(value, str):
                raise _Malformed(f"{where}[{k}].text: expected a string, got {_kind(value)}")
            texts.append(value)
        else:
            other.append(part["type"])
    return "\n".join(texts), other


def _call(c: Any, where: str) -> Call:
    if not isinstance(c, dict):
        raise _Malformed(f"{where}: expected an object, got {_kind(c)}")
    if c.get("type", "function") != "function":
        raise _Malformed(f"{where}.type: expected \"function\", got {_clip(c.get('type'))}")
    call_id, fn = c.get("id"), c.get("function")
    if not isinstance(call_id, str):
        raise _Malformed(f"{where}.id: expected a string, got {_kind(call_id)}")
    if not isinstance(fn, dict):
        raise _Malformed(f"{where}.function: expected an object, got {_kind(fn)}")
    name, arguments = fn.get("name"), fn.get("arguments")
    if not isinstance(name, str) or not name:
        raise _Malformed(f"{where}.function.name: expected a non-empty string, got {_kind(name)}")
    if not isinstance(arguments, str):
        raise _Malformed(f"{where}.function.arguments: expected a JSON string, got {_kind(arguments)}")
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except ValueError as e:
        return Call(call_id, name, None, arguments, f"the arguments are not valid JSON ({json_error(e)})")
    if not isinstance(args, dict):
        return Call(call_id, name, None, arguments, f"the arguments are {_kind(args)}, not a JSON object")
    # The arguments are JSON inside JSON: a `\\ud800` escape at the inner level is decoded here.
    _refuse_lone_surrogates(args, f"{where}.function.arguments (decoded)")
    return Call(call_id, name, args, arguments)


def _refuse_lone_surrogates(value: Any, where: str, in_file: str = "") -> None:
    """Malformed if `value` holds a lone surrogate; `in_file` names a side file it came from."""
    found = lone_surrogates(value, where)
    if found:
        raise _Malformed("; ".join(f"{in_file}: {x}" if in_file else x for x in found))


def _clip(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

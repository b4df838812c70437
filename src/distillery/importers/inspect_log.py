"""inspect_ai eval logs (`.eval` or `.json`) -> `RawRecord`s, one per sample and epoch.

Read through `inspect_ai.log`'s API (`read_eval_log` for the header, `read_eval_log_samples`
one sample at a time, attachments resolved), never the file format, which its maintainers do
not freeze. Per sample: `id` and `epoch` (the record), `input` (the instruction when it is
text), `metadata` (task_id, env, family, split, profile, instruction: the same block as the
OpenAI format's), `messages` (assistant `tool_calls` with `arguments` as a dict and any
`parse_error`; tool messages with `tool_call_id` and `error`), `scores` (converted with
inspect's own `value_to_float`: "C" -> 1, "I" -> 0, "P" -> 0.5), `error`, `limit`,
`model_usage` and `total_time`. The tools a sample offered are read from its first model event.

inspect_ai is an optional dependency (`pip install 'distillery[import]'`), imported here only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillery.importers.openai_jsonl import outcome_of
from distillery.importers.records import (
    Call,
    Message,
    Outcome,
    RawRecord,
    escape_surrogates,
    lone_surrogates,
    sha256_text,
)

# What a record is read from: the fields its content hash covers.
_FIELDS = {"id", "epoch", "input", "target", "metadata", "messages", "scores", "error", "limit", "model_usage"}
_TEXT = ("text",)
_THOUGHT = ("reasoning",)   # an assistant's reasoning: text, but not what it said or did


def _inspect() -> Any:
    try:
        import inspect_ai.log as ilog
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading inspect_ai logs needs inspect_ai: pip install 'distillery[import]' "
                          "(or pip install 'inspect_ai>=0.3')") from e
    return ilog


def read_inspect(path: str | Path, source: str, scorer: str = "") -> Iterator[RawRecord]:
    """The records of one eval log, in the log's sample order. A log that cannot be read at
    all is one malformed record; one that breaks off yields its samples up to there, then
    one malformed record for the rest."""
    ilog = _inspect()
    try:
        header = ilog.read_eval_log(str(path), header_only=True)
    except Exception as e:  # noqa: BLE001 - whatever the reader raises, the file is reported, not fatal
        yield _broken(source, 0, "file", f"cannot read the eval log ({type(e).__name__}: {_first_line(e)})")
        return
    model = str(header.eval.model or "")
    task = str(header.eval.task or "")
    position = 0
    samples = ilog.read_eval_log_samples(str(path), all_samples_required=False, resolve_attachments=True)
    while True:
        try:
            sample = next(samples)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - a log that breaks off mid-way: keep what was read
            yield _broken(source, position, f"samples from #{position + 1} on",
                          f"the eval log breaks off ({type(e).__name__}: {_first_line(e)})")
            return
        yield _record(sample, source, position, model, task, scorer)
        position += 1


def _broken(source: str, position: int, label: str, why: str) -> RawRecord:
    return RawRecord(format="inspect", source=source, position=position, record=label, line=None,
                     sample=f"#{position + 1}", epoch=1, sha256=sha256_text(f"{source}|{label}|{why}"),
                     malformed=[why])


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def _record(s: Any, source: str, position: int, model: str, task: str, scorer: str) -> RawRecord:
    # inspect reads an .eval log's samples with Python's json, which decodes a `\\ud800` escape
    # that is not half of a pair into a lone surrogate: checked before anything is copied.
    fields = s.model_dump(include=_FIELDS)
    not_unicode = lone_surrogates(fields) + lone_surrogates({"model": model, "task": task}, "eval")
    if not_unicode:
        return _not_unicode(s, fields, source, position, not_unicode)
    blob = s.model_dump_json(include=_FIELDS)
    meta = dict(s.metadata or {})
    rec = RawRecord(format="inspect", source=source, position=position, record=f"sample {s.id} epoch {s.epoch}",
                    line=None, sample=str(s.id), epoch=int(s.epoch), sha256=sha256_text(blob), metadata=meta,
                    model=model)
    rec.messages = [_message(m, f"messages[{i}]") for i, m in enumerate(s.messages)]
    rec.tools = _tools(s)
    instruction = meta.get("instruction")
    rec.instruction = instruction if isinstance(instruction, str) else s.input if isinstance(s.input, str) else None
    task_id = meta.get("task_id")
    rec.task_id = task_id if isinstance(task_id, str) and task_id else f"{task}/{s.id}"
    for key in ("env", "family", "split", "profile", "policy"):
        value = meta.get(key)
        setattr(rec, key, value if isinstance(value, str) else "")
    rec.tokens_in = sum(int(u.input_tokens or 0) for u in s.model_usage.values())
    rec.tokens_out = sum(int(u.output_tokens or 0) for u in s.model_usage.values())
    rec.wall_s = float(s.total_time or 0.0)
    if s.error is not None:
        rec.error = _first_line(s.error.message) or "the sample errored"
    if s.limit is not None:
        rec.limit = f"{s.limit.type} limit ({s.limit.limit:g}) hit"
    rec.outcome = _outcome(s.scores or {}, scorer)
    return rec


def _not_unicode(s: Any, fields: dict[str, Any], source: str, position: int, findings: list[str]) -> RawRecord:
    """A sample holding a lone surrogate, as a malformed record: its id escaped, hashed as
    ASCII JSON (its own JSON cannot be encoded as UTF-8)."""
    sample = escape_surrogates(str(s.id))
    blob = json.dumps(fields, sort_keys=True, default=str)
    return RawRecord(format="inspect", source=source, position=position, record=f"sample {sample} epoch {s.epoch}",
                     line=None, sample=sample, epoch=int(s.epoch), sha256=sha256_text(blob), malformed=findings)


def _outcome(scores: dict[str, Any], scorer: str) -> Outcome:
    """The named score, or the only one, or the first; converted with inspect's value_to_float."""
    from inspect_ai.scorer import value_to_float

    if not scores:
        return Outcome()
    if scorer and scorer not in scores:
        return Outcome(scorer=scorer, problems=[f"no score named {scorer!r}; the sample has {', '.join(scores)}"])
    name = scorer or next(iter(scores))
    score = scores[name]
    value = score.value
    if isinstance(value, list | dict):
        return Outcome(scorer=name, problems=[f"score {name!r} is {type(value).__name__} {json.dumps(value)[:60]}, "
                                              "not one value"])
    number = value_to_float()(value)
    if not isinstance(number, float) or not math.isfinite(number):
        return Outcome(scorer=name, problems=[f"score {name!r} = {value!r} converts to {number!r}"])
    checks = (score.metadata or {}).get("failed_checks") if score.metadata else None
    out = outcome_of(None, number, name, [c for c in checks if isinstance(c, str)] if isinstance(checks, list) else [])
    out.value = f"{name}={value!r}"
    return out


def _message(m: Any, where: str) -> Message:
    msg = Message(role=str(m.role), where=where)
    content = m.content
    if isinstance(content, str):
        msg.text = content
    else:
        texts = []
        for part in content:
            kind = getattr(part, "type", type(part).__name__)
            if kind in _TEXT:
                texts.append(part.text)
            elif kind not in _THOUGHT:
                msg.non_text.append(kind)
        msg.text = "\n".join(texts)
    if msg.role == "assistant":
        for c in m.tool_calls or []:
            args = c.arguments if isinstance(c.arguments, dict) else None
            raw = json.dumps(c.arguments, ensure_ascii=False, sort_keys=True) if args is not None else str(c.arguments)
            error = f"the arguments could not be parsed ({c.parse_error})" if c.parse_error else \
                "" if args is not None else "the arguments are not a JSON object"
            msg.calls.append(Call(str(c.id), str(c.function), None if c.parse_error else args, raw, error))
    if msg.role == "tool":
        msg.call_id = str(m.tool_call_id or "")
        if m.error is not None:
            msg.error = str(m.error.message)
    return msg


def _tools(s: Any) -> list[dict[str, Any]]:
    """The tools of the sample's first model call, as OpenAI function definitions."""
    for event in s.events or []:
        if getattr(event, "event", "") == "model" and getattr(event, "tools", None):
            return [{"type": "function", "function": {
                "name": t.name, "description": t.description,
                "parameters": t.parameters.model_dump(mode="json", exclude_none=True)}} for t in event.tools]
    return []

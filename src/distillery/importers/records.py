"""One record of a user's log, read into a common form, and what it says as steps.

Both readers (`openai_jsonl`, `inspect_log`) turn a record into a `RawRecord`: its messages as
`Message`s (role, text, tool calls, the call a tool message answers and its error), its tool
definitions, its outcome as logged, and where it came from. `analyse` then reads the
conversation once: it checks the message rules of the import gate (roles, call ids, text) and
turns every tool call into a `StepDraft` with the observation before it and the answer after.
Nothing here reads a file or knows which format a record came from.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from distillery.agents.openai import ordered_args
from distillery.envs.actions import format_call, parse_action
from distillery.envs.base import ToolSpec
from distillery.importers.secrets import find_secrets
from distillery.types import ToolCall

SYSTEM_ROLES = ("system", "developer")
KNOWN_ROLES = ("system", "developer", "user", "assistant", "tool")
# Distillery's own first user message (agents/prompts.py FIRST_USER_TEMPLATE): the
# instruction, a blank line, the first observation.
_TASK_TEMPLATE = re.compile(r"\ATask: (?P<instruction>[^\n]*)\n\n(?P<observation>.*)\Z", re.DOTALL)


@dataclass
class Call:
    """One tool call as logged. `args` is None when the arguments are not a JSON object
    (`raw_args` keeps them as logged, `error` says why)."""

    id: str
    name: str
    args: dict[str, Any] | None
    raw_args: str
    error: str = ""


@dataclass
class Message:
    role: str
    text: str = ""
    calls: list[Call] = field(default_factory=list)
    call_id: str = ""          # a tool message: the call it answers
    error: str = ""            # a tool message: the tool's error, if it raised one
    non_text: list[str] = field(default_factory=list)   # kinds of content parts that are not text
    where: str = ""            # e.g. "messages[3]"


@dataclass
class Outcome:
    """The outcome as logged. `problems` are why it cannot be used (bad_outcome)."""

    score: float | None = None
    success: bool | None = None
    scorer: str = ""
    value: str = ""            # the logged value as text (e.g. "'C'"), for the failed-check note
    failed_checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def missing(self) -> bool:
        return self.score is None and self.success is None and not self.problems


@dataclass
class RawRecord:
    """A record as read, before it is judged. `malformed` non-empty: the record could not be
    read as its format says, and nothing else in it is trusted."""

    format: str
    source: str
    position: int
    record: str
    line: int | None
    sample: str
    epoch: int
    sha256: str
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    instruction: str | None = None     # stated apart from the messages (metadata, eval input)
    task_id: str = ""
    env: str = ""
    family: str = ""
    split: str = ""
    profile: str = ""
    outcome: Outcome = field(default_factory=Outcome)
    error: str = ""                    # the run ended in this error
    limit: str = ""                    # the limit the run hit, or why it was cut short
    model: str = ""
    policy: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    wall_s: float = 0.0
    malformed: list[str] = field(default_factory=list)


# A surrogate code point (U+D800-U+DFFF) in a Python string: JSON's `\\ud800` escape decodes to
# one when it is not half of a pair, and no UTF-8 text (a parquet table, a report) can hold it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogates(value: Any, where: str = "") -> list[str]:
    """Where a decoded JSON value (its strings, and its objects' keys) holds a lone surrogate,
    one finding per string, e.g. `messages[0].content: \\ud800 at character 4 is ...`. Both
    readers reject such a record as malformed: left in, it would fail the writing of the whole
    import. A finding quotes the code point, never the text."""
    if isinstance(value, str):
        m = _SURROGATE.search(value)
        if m is None:
            return []
        return [f"{where or 'the record'}: {escape_surrogates(m.group())} at character {m.start() + 1} is a lone "
                "surrogate, not valid Unicode (half of a UTF-16 pair, the other half missing)"]
    if isinstance(value, dict):
        found = []
        for k, v in value.items():
            at = _member(where, escape_surrogates(str(k)))
            found += lone_surrogates(k, f"{at} (its key)") + lone_surrogates(v, at)
        return found
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in lone_surrogates(v, f"{where}[{i}]")]
    return []


def _member(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def escape_surrogates(text: str) -> str:
    """`text` with its lone surrogates written as `\\udxxx`: safe to write anywhere."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def sha256_text(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text).hexdigest()


def episode_id(fmt: str, source: str, sample: str, epoch: int) -> str:
    """Deterministic: the same file (as named), sample and epoch give the same id, whenever
    and however often it is imported. The hash tells apart files with the same name."""
    stem = source.replace("\\", "/").rsplit("/", 1)[-1]
    for ext in (".jsonl", ".json", ".eval"):
        stem = stem.removesuffix(ext)
    h = hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{fmt}:{stem}:{sample}:e{epoch}:{h}"


def toolset_key(tools: Sequence[dict[str, Any]]) -> str:
    """A short key of a list of tool definitions ('' for none): records that declare the same
    tools share one entry of tools.json."""
    if not tools:
        return ""
    blob = json.dumps(sorted(tools, key=lambda t: json.dumps(t, sort_keys=True)), sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=6).hexdigest()


def normalise(text: str) -> str:
    """What makes two instructions the same: case and runs of white space do not count."""
    return " ".join(text.split()).casefold()


# ---------------------------------------------------------------------------------------
# Reading a conversation
# ---------------------------------------------------------------------------------------


@dataclass
class StepDraft:
    call: Call
    observation: str
    action_text: str
    args_json: str
    valid: bool
    error: str
    feedback: str


@dataclass
class Analysis:
    """What a record's conversation says: its steps, the rules it breaks, and its text."""

    instruction: str
    steps: list[StepDraft]
    answer: str
    finished: bool                     # ended on its own: a final reply, nothing left unanswered
    problems: dict[str, list[str]]
    texts: list[str]                   # every text the episode holds (for its length)


def call_text(name: str, args: dict[str, Any] | None, raw_args: str, specs: Sequence[ToolSpec]) -> str:
    """A call as Distillery writes actions: `tool(arg="value", ...)`, arguments in the
    tool's parameter order (as the environment's parser orders them) when the tool is known.
    Arguments that are not a JSON object are kept as a JSON action with the raw text, which
    the environment's parser rejects with a message naming the problem."""
    if args is None:
        return json.dumps({"tool": name, "arguments": raw_args}, ensure_ascii=False)
    return format_call(ToolCall(name, ordered_args(name, args, specs)))


def split_first_user(text: str, instruction: str | None) -> tuple[str, str]:
    """(instruction, first observation) from the first user message.

    Distillery's own format (`Task: <instruction>`, a blank line, the observation) is split
    in two. Otherwise, with no instruction stated apart, the whole message is the instruction
    and nothing was observed yet; with one stated, the message is the observation unless it
    merely repeats the instruction.
    """
    m = _TASK_TEMPLATE.match(text)
    if instruction is None:
        if m:
            return m["instruction"], m["observation"]
        return text, ""
    if m and normalise(m["instruction"]) == normalise(instruction):
        return instruction, m["observation"]
    if normalise(text) == normalise(instruction):
        return instruction, ""
    if text.startswith(instruction):
        return instruction, text[len(instruction):].lstrip("\n")
    return instruction, text


def analyse(raw: RawRecord, specs: Sequence[ToolSpec]) -> Analysis:
    """Check the message rules and read the steps. `specs` are the environment's tools when
    it is registered (a call is then valid only if its parser accepts it), else empty."""
    problems: dict[str, list[str]] = {}

    def problem(kind: str, text: str) -> None:
        problems.setdefault(kind, []).append(text)

    msgs = raw.messages
    if not msgs:
        problem("first_role", "the record has no messages")
    elif msgs[0].role not in (*SYSTEM_ROLES, "user"):
        problem("first_role", f"{msgs[0].where} is a {msgs[0].role!r} message")
    for m in msgs:
        if m.role not in KNOWN_ROLES:
            problem("unknown_role", f"{m.where} has role {m.role!r}")
        if m.non_text:
            problem("non_text", f"{m.where} ({m.role}) holds {', '.join(sorted(set(m.non_text)))} content")

    instruction = raw.instruction
    first_observation = ""
    seen_user = False
    calls: list[Call] = []             # in the order they were made
    call_where: list[str] = []
    extras: list[list[str]] = []       # user text that came before each call (beyond feedback)
    pending_text: list[str] = []
    answers: dict[str, Message] = {}
    made: dict[str, int] = {}          # call id -> index in calls
    last_assistant = -1
    for i, m in enumerate(msgs):
        if m.role == "user":
            if not seen_user:
                seen_user = True
                instruction, first_observation = split_first_user(m.text, instruction)
                if first_observation:
                    pending_text.append(first_observation)
            elif m.text:
                pending_text.append(m.text)
        elif m.role == "assistant":
            last_assistant = i
            for j, c in enumerate(m.calls):
                if c.id in made:
                    problem("duplicate_call_id", f"{m.where}: call id {c.id!r} ({c.name}) was already "
                                                 f"used by call {made[c.id] + 1}")
                    continue
                made[c.id] = len(calls)
                calls.append(c)
                call_where.append(m.where)
                extras.append(pending_text if j == 0 else [])
                if j == 0:
                    pending_text = []
        elif m.role == "tool":
            if m.call_id not in made:
                problem("unknown_call_id", f"{m.where} answers call id {m.call_id!r}, which no earlier "
                                           "assistant message made")
            elif m.call_id in answers:
                problem("unknown_call_id", f"{m.where} answers call id {m.call_id!r} a second time "
                                           f"(first: {answers[m.call_id].where})")
            else:
                answers[m.call_id] = m
    if instruction is None:
        instruction = ""
        problem("first_role", "no user message states the task")

    # A run cut short (a limit) may stop between a call and its answer: those calls never ran,
    # so they are where the run ended, not steps. Anywhere else an unanswered call is an error.
    last_calls = {c.id for c in msgs[last_assistant].calls} if last_assistant >= 0 else set()
    cut = {c.id for c in calls if c.id not in answers and c.id in last_calls} if raw.limit else set()
    for c, where in zip(calls, call_where, strict=True):
        if c.id not in answers and c.id not in cut:
            problem("unanswered_call", f"{where}: call {c.id!r} ({c.name}) has no tool message answering it")

    steps: list[StepDraft] = []
    previous_feedback: str | None = None
    for c, extra in zip(calls, extras, strict=True):
        if c.id in cut:
            break
        answer = answers.get(c.id)
        parts = ([previous_feedback] if previous_feedback is not None else []) + extra
        action = call_text(c.name, c.args, c.raw_args, specs)
        errors = [e for e in (c.error, answer.error if answer else "") if e]
        if specs and not errors:
            parsed = parse_action(action, specs)
            if not parsed.valid:
                errors.append(parsed.error)
        feedback = answer.text if answer and answer.text else (answer.error if answer else "")
        steps.append(StepDraft(
            call=c, observation="\n\n".join(parts), action_text=action,
            args_json=json.dumps(c.args, ensure_ascii=False, sort_keys=True) if c.args is not None else "",
            valid=not errors, error="; ".join(errors), feedback=feedback))
        previous_feedback = feedback

    final = msgs[last_assistant] if last_assistant >= 0 else None
    answer_text = final.text if final is not None and not final.calls else ""
    finished = not raw.limit and not raw.error and final is not None and not final.calls

    texts = [instruction] + [m.text for m in msgs] + [c.raw_args for c in calls]
    for m in msgs:
        for text, what in [(m.text, "text"), *[(c.raw_args, f"arguments of call {c.id!r}") for c in m.calls]]:
            names = find_secrets(text)
            if names:
                problem("secret", f"{m.where} ({m.role}) {what} looks like {' and '.join(names)}")
    for i, tool in enumerate(raw.tools):
        names = find_secrets(json.dumps(tool, ensure_ascii=False))
        if names:
            problem("secret", f"tools[{i}] looks like {' and '.join(names)}")
    for key, value in _strings(raw.metadata, "metadata"):
        names = find_secrets(value)
        if names:
            problem("secret", f"{key} looks like {' and '.join(names)}")
    return Analysis(instruction=instruction, steps=steps, answer=answer_text, finished=finished,
                    problems=problems, texts=texts)


def _strings(obj: Any, where: str) -> list[tuple[str, str]]:
    """Every string in a JSON-like value, with where it is."""
    if isinstance(obj, str):
        return [(where, obj)]
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in _strings(v, f"{where}.{k}")]
    if isinstance(obj, list | tuple):
        return [x for i, v in enumerate(obj) for x in _strings(v, f"{where}[{i}]")]
    return []

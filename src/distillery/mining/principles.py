"""Principle-level experience: an ExpeL-style rule pool (reference/algorithms.md 5a, 5b).

A pool is a list of `Experience` records of kind ``principle``. It changes only through
operations (`PrincipleOp`): ADD a rule, EDIT rule i, AGREE with rule i, REMOVE rule i. Each
rule keeps ExpeL's counter (ADD starts at 2, AGREE and EDIT +1, REMOVE -1 or -3 when the list
is full); rules whose counter reaches 0 are dropped, the rest are sorted by counter and the
highest `max_rules` kept (`apply_ops`, a pure function).

Operations come from a `Summariser` that reads evidence built from trajectories: for each
task group, its successful and failed episodes with their decisive (mutating) calls.

- `RulesSummariser` (offline, deterministic) compares the arguments of successful mutating
  calls across many tasks of a family, abstracts what varies (names, ids, numbers, dates,
  anything copied from the instruction or an observation) into slots and states what stays
  constant (folders, extensions, sign-offs, durations, which optional fields are filled).
  Within a task group it contrasts a failure with a success of the same task: a dimension on
  which they differ, tied to a failed check of a matching type, needs less support. A failed
  check that states the value it wanted ("mail_in_folder(folder=reading, mail_id=m1)") also
  corrects the failure's call (`corrected_calls`), so failures teach even where no episode of
  the task succeeded. It never reads a task's `preferences` or its checks; only the failed
  checks an episode reported, as a user's correction would. With `lessons_only`, it keeps
  only regularities some failure contrasted. Rules are worded as the profiles word
  preferences (`PHRASES`), the text the warm-up student learned to follow.
- `LLMSummariser` sends the same evidence to any OpenAI-compatible endpoint and parses the
  reply into operations, one per line.

`update_pool` ties it together and never loses the pool: whatever goes wrong (no episodes,
nothing succeeded, no contrast, an endpoint down) ends with the old pool and a message.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlparse

import polars as pl

from distillery.envs.base import ToolParam, ToolSpec, tool_specs
from distillery.types import Experience, Task, ToolCall

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Operations and ExpeL's counters
# ---------------------------------------------------------------------------------------

OPS: tuple[str, ...] = ("ADD", "EDIT", "AGREE", "REMOVE")
APPLY_ORDER: dict[str, int] = {"REMOVE": 0, "AGREE": 1, "EDIT": 2, "ADD": 3}
ADD_COUNTER = 2          # a new rule starts here
FULL_MARGIN = 5          # the list is "full" at max_rules + 5 rules: REMOVE then costs 3
FULL_REMOVE = 3
MAX_PROVENANCE = 32      # episode ids kept per rule (enough to trace it, small on disk)


@dataclass(frozen=True)
class PrincipleOp:
    """One edit of a pool. `index` is the 0-based position, in the pool the op was
    proposed against, of the rule it acts on (unused by ADD). `family` and `condition`
    describe the rule an ADD creates (an EDIT may update them); `condition` is the
    dimension a rule speaks about, e.g. ``send_mail.body last_line``."""

    op: str
    index: int = -1
    text: str = ""
    family: str = ""
    condition: str = ""
    provenance: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"principle op must be one of {OPS}, not {self.op!r}")
        if self.op in ("ADD", "EDIT") and not self.text.strip():
            raise ValueError(f"{self.op} needs a rule text")
        if self.op != "ADD" and self.index < 0:
            raise ValueError(f"{self.op} needs the index of an existing rule, got {self.index}")

    def render(self) -> str:
        """The op as a reply line, numbering rules from 1 as the prompt does."""
        if self.op == "ADD":
            return f"ADD: {self.text}"
        if self.op == "EDIT":
            return f"EDIT {self.index + 1}: {self.text}"
        return f"{self.op} {self.index + 1}"


def principle_id(text: str, family: str = "", condition: str = "") -> str:
    """Deterministic id of a rule: a hash of what it says and where it applies."""
    h = hashlib.sha1(f"{family}\x1f{condition}\x1f{_norm(text)}".encode()).hexdigest()
    return f"p-{h[:12]}"


def _norm(text: str) -> str:
    return " ".join(text.split()).strip().lower()


def _merge_ids(old: Sequence[str], new: Iterable[str]) -> list[str]:
    out = list(old)
    seen = set(out)
    for i in new:
        if i not in seen:
            out.append(i)
            seen.add(i)
    return out[-MAX_PROVENANCE:]


def apply_ops(pool: Sequence[Experience], ops: Sequence[PrincipleOp], max_rules: int = 20) -> list[Experience]:
    """The pool after `ops`, ExpeL's way. Pure: `pool` and its records are not touched.

    Ops are applied in the order REMOVE, AGREE, EDIT, ADD (stable within a kind) and their
    indices refer to `pool` as given. REMOVE costs 1, or 3 when the pool holds at least
    `max_rules + 5` rules; AGREE and EDIT add 1 (EDIT also replaces the text, and with it
    the id); ADD appends a rule at 2 unless the same text is already there. A rule whose
    counter reaches 0 is dropped at once (later ops on it are ignored). The survivors are
    sorted by counter, highest first (ties keep their order), and the top `max_rules` kept.
    """
    if max_rules < 1:
        raise ValueError(f"max_rules must be >= 1, not {max_rules}")
    items: list[Experience | None] = [copy.deepcopy(e) for e in pool]
    full = len(pool) >= max_rules + FULL_MARGIN
    for op in sorted(ops, key=lambda o: APPLY_ORDER[o.op]):
        if op.op == "ADD":
            live = {_norm(e.text) for e in items if e is not None}
            if _norm(op.text) in live:
                log.info("ADD ignored: the pool already holds %r", op.text)
                continue
            items.append(Experience(
                exp_id=principle_id(op.text, op.family, op.condition), kind="principle", text=op.text.strip(),
                condition=op.condition, family=op.family, provenance=_merge_ids([], op.provenance),
                counter=ADD_COUNTER, status="active"))
            continue
        if not 0 <= op.index < len(pool):
            log.warning("%s ignored: no rule %d in a pool of %d", op.op, op.index + 1, len(pool))
            continue
        item = items[op.index]
        if item is None:
            log.info("%s %d ignored: that rule was already dropped", op.op, op.index + 1)
            continue
        if op.op == "REMOVE":
            item.counter -= FULL_REMOVE if full else 1
        elif op.op == "AGREE":
            item.counter += 1
            item.provenance = _merge_ids(item.provenance, op.provenance)
        else:  # EDIT
            item.counter += 1
            item.text = op.text.strip()
            item.family = op.family or item.family
            item.condition = op.condition or item.condition
            item.exp_id = principle_id(item.text, item.family, item.condition)
            item.provenance = _merge_ids(item.provenance, op.provenance)
        if item.counter <= 0:
            items[op.index] = None
    live_items = [e for e in items if e is not None]
    live_items.sort(key=lambda e: -e.counter)   # list.sort is stable
    return live_items[:max_rules]


# ---------------------------------------------------------------------------------------
# Reply lines -> ops (the LLM summariser's output format)
# ---------------------------------------------------------------------------------------

_OP_LINE = re.compile(
    r"^(?:[-*•]\s*|\d+[.)]\s+)?(?P<op>ADD|EDIT|AGREE|REMOVE)\b\s*(?P<num>\d+)?\s*[:.\-]?\s*(?P<text>.*)$",
    re.IGNORECASE)


def parse_ops(reply: str, n_rules: int) -> tuple[list[PrincipleOp], list[str]]:
    """Ops from a reply, one per line (`ADD: text`, `EDIT 3: text`, `AGREE 2`, `REMOVE 1`;
    rules numbered from 1). Returns the ops and, for every line ignored, why."""
    ops: list[PrincipleOp] = []
    ignored: list[str] = []
    for raw in reply.splitlines():
        line = raw.strip().strip("`").strip()
        if not line:
            continue
        m = _OP_LINE.match(line.replace("**", ""))
        if m is None:
            ignored.append(f"not an operation: {line[:120]!r}")
            continue
        op, num, text = m["op"].upper(), m["num"], m["text"].strip().strip('"').strip()
        if op == "ADD":
            if num is not None:
                text = f"{num} {text}".strip() if text else ""
            if not text:
                ignored.append(f"ADD without a rule: {line[:120]!r}")
                continue
            ops.append(PrincipleOp("ADD", text=text))
            continue
        if num is None:
            ignored.append(f"{op} without a rule number: {line[:120]!r}")
            continue
        i = int(num)
        if not 1 <= i <= n_rules:
            ignored.append(f"{op} {i}: there are {n_rules} rules: {line[:120]!r}")
            continue
        if op == "EDIT":
            if not text:
                ignored.append(f"EDIT {i} without the new text: {line[:120]!r}")
                continue
            ops.append(PrincipleOp("EDIT", i - 1, text=text))
        else:
            ops.append(PrincipleOp(op, i - 1))
    for why in ignored:
        log.warning("summariser reply line ignored: %s", why)
    return ops, ignored


# ---------------------------------------------------------------------------------------
# Evidence: task groups with their successful and failed episodes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One decisive (valid, mutating, error-free) call and what the agent had seen by then."""

    tool: str
    args: dict[str, Any]
    t: int
    seen: str      # the instruction and every observation up to this step, lower-cased


@dataclass
class EpisodeEvidence:
    episode_id: str
    success: bool
    failed_checks: list[str]
    calls: list[Call]


@dataclass
class GroupEvidence:
    """The K episodes of one task (one rollout group)."""

    group: str
    task: Task
    successes: list[EpisodeEvidence] = field(default_factory=list)
    failures: list[EpisodeEvidence] = field(default_factory=list)

    @property
    def has_contrast(self) -> bool:
        return bool(self.successes and self.failures)


@dataclass
class Evidence:
    groups: list[GroupEvidence]
    messages: list[str] = field(default_factory=list)
    env: str = "stage"

    @property
    def n_successes(self) -> int:
        return sum(len(g.successes) for g in self.groups)

    @property
    def n_failures(self) -> int:
        return sum(len(g.failures) for g in self.groups)


def _examples(names: Sequence[str], n: int = 3) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def build_evidence(tasks: Mapping[str, Task], episodes: pl.DataFrame, steps: pl.DataFrame) -> Evidence:
    """Group episodes by task group and keep each one's decisive calls. Episodes of tasks
    missing from `tasks` are left out with a message; so is every group with nothing to
    contrast, with a message saying so."""
    messages: list[str] = []
    if episodes.height == 0:
        return Evidence([], ["no episodes"])
    env = str(episodes["env"][0]) if "env" in episodes.columns else "stage"
    mutating = {s.name for s in tool_specs(env) if s.mutates}
    by_episode: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if steps.height:
        cols = [c for c in ("episode_id", "t", "observation", "tool", "args_json", "valid", "error", "feedback")
                if c in steps.columns]
        for row in steps.select(cols).sort(["episode_id", "t"]).iter_rows(named=True):
            by_episode[row["episode_id"]].append(row)
    groups: dict[str, GroupEvidence] = {}
    missing: list[str] = []
    group_col = "group" if "group" in episodes.columns else "task_id"
    for ep in episodes.sort("episode_id").iter_rows(named=True):
        task = tasks.get(ep["task_id"])
        if task is None:
            missing.append(ep["task_id"])
            continue
        seen = [task.instruction.lower()]
        calls = []
        for st in by_episode.get(ep["episode_id"], []):
            seen.append(str(st.get("observation") or "").lower())
            if st.get("tool") not in mutating or not st.get("valid", True) or st.get("error"):
                continue
            try:
                args = json.loads(st.get("args_json") or "{}")
            except json.JSONDecodeError:
                continue
            if isinstance(args, dict):
                calls.append(Call(st["tool"], args, int(st["t"]), "\n".join(seen)))
        g = groups.setdefault(ep[group_col], GroupEvidence(ep[group_col], task))
        rec = EpisodeEvidence(ep["episode_id"], bool(ep["success"]), list(ep.get("failed_checks") or []), calls)
        (g.successes if rec.success else g.failures).append(rec)
    if missing:
        u = sorted(set(missing))
        messages.append(f"{len(missing)} episode(s) of {len(u)} unknown task(s) left out: {_examples(u)}")
    profiles = sorted({g.task.profile for g in groups.values()})
    if len(profiles) > 1:
        messages.append(f"episodes of {len(profiles)} users are mixed ({_examples(profiles)}): preferences differ "
                        "per user, so only what they share can be found; give each user's pool that user's episodes")
    only_s = [g.group for g in groups.values() if g.successes and not g.failures]
    only_f = [g.group for g in groups.values() if g.failures and not g.successes]
    if only_s:
        messages.append(f"{len(only_s)} task group(s) have only successes, no failure to contrast "
                        f"(used for cross-task regularities only): {_examples(only_s)}")
    if only_f:
        messages.append(f"{len(only_f)} task group(s) have only failures: only what their failed checks "
                        f"state can be learned from them: {_examples(only_f)}")
    return Evidence(list(groups.values()), messages, env)


# ---------------------------------------------------------------------------------------
# Summarisers
# ---------------------------------------------------------------------------------------


@dataclass
class Proposal:
    ops: list[PrincipleOp]
    messages: list[str] = field(default_factory=list)


class Summariser(Protocol):
    """Proposes ops for `pool` (indices into it) from evidence."""

    name: str

    def propose(self, pool: Sequence[Experience], evidence: Evidence) -> Proposal: ...


class EndpointError(RuntimeError):
    """An OpenAI-compatible endpoint could not answer (down, 5xx after retries, no reply)."""


# -- the offline, deterministic summariser ---------------------------------------------

# Which tools a failed check's type speaks about (check types from envs/stage/checks.py).
CHECK_TOOLS: dict[str, tuple[str, ...]] = {
    "file_exists": ("move", "write_file", "save_attachment"),
    "file_contains": ("move", "write_file", "save_attachment"),
    "file_absent": ("move", "delete"),
    "mail_sent": ("send_mail",),
    "mail_in_folder": ("move_mail",),
    "event_exists": ("create_event",),
    "contact_exists": ("add_contact",),
}

# What a failed check says a call should have been. Only checks that state an exact value
# qualify: check type -> tool -> (how the check names the call it is about, and which check
# key gives which argument). "basename": the call's path argument has the checked file's name.
CHECK_ARGS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "file_exists": {"move": ("basename", {"path": "dst"}), "save_attachment": ("basename", {"path": "path"}),
                    "write_file": ("basename", {"path": "path"})},
    "mail_in_folder": {"move_mail": ("mail_id", {"folder": "folder"})},
    "event_exists": {"create_event": ("date", {"start": "start", "duration": "duration"})},
    "contact_exists": {"add_contact": ("email", {"name": "name", "phone": "phone", "company": "company"})},
}
_CHECK_NAME = re.compile(r"(\w+)\((.*)\)", re.S)


def parse_check_name(name: str) -> tuple[str, dict[str, str]] | None:
    """(type, arguments) of a check as `envs.stage.checks.check_name` writes it:
    "mail_in_folder(folder=reading, mail_id=m1)" -> ("mail_in_folder", {"folder": "reading",
    "mail_id": "m1"}); None when it does not read that way."""
    m = _CHECK_NAME.fullmatch(name.strip())
    if m is None:
        return None
    args: dict[str, str] = {}
    for part in re.split(r", (?=\w+=)", m[2]) if m[2] else []:
        key, eq, value = part.partition("=")
        if not eq:
            return None
        args[key] = value
    return m[1], args


def _same(a: Any, b: str) -> bool:
    return str(a).strip().lower() == b.strip().lower()


def corrected_calls(episode: EpisodeEvidence, specs: Mapping[str, ToolSpec]) -> list[Call]:
    """The calls of a failed episode as its failed checks say they should have been.

    A failed check that states an exact value (`CHECK_ARGS`) and names one of the episode's
    calls (same mail id, email, date, or file name) gives that call with the checked values
    in place of the agent's: "mail_in_folder(folder=reading, mail_id=m1)" against
    move_mail(mail_id=m1, folder=later) gives move_mail(mail_id=m1, folder=reading). This is
    the environment's feedback on the failure, not the task's hidden preferences; only
    calls that change are returned, each at most once."""
    out: dict[int, dict[str, Any]] = {}
    for name in episode.failed_checks:
        parsed = parse_check_name(name)
        if parsed is None or parsed[0] not in CHECK_ARGS:
            continue
        ctype, cargs = parsed
        for i, c in enumerate(episode.calls):
            rule = CHECK_ARGS[ctype].get(c.tool)
            if rule is None:
                continue
            key, mapping = rule
            if key == "basename":
                arg = mapping["path"]
                if arg not in c.args or "path" not in cargs or (
                        posixpath.basename(str(c.args[arg])) != posixpath.basename(cargs["path"])):
                    continue
            elif key not in c.args or key not in cargs or not _same(c.args[key], cargs[key]):
                continue
            params = {p.name: p for p in specs[c.tool].params} if c.tool in specs else {}
            fixed = out.setdefault(i, dict(c.args))
            for ckey, arg in mapping.items():
                if ckey not in cargs or arg not in params:
                    continue
                value: Any = cargs[ckey]
                if params[arg].type == "integer":
                    try:
                        value = int(value)
                    except ValueError:
                        continue
                fixed[arg] = value
    return [Call(episode.calls[i].tool, args, episode.calls[i].t, episode.calls[i].seen)
            for i, args in sorted(out.items()) if args != episode.calls[i].args]

# How a regularity reads: by (family, tool, argument, aspect), then (tool, argument, aspect),
# then by aspect alone. Data, not logic. The wording is the profiles' own
# (envs/stage/profiles.py: "Saved attachments go in files/received/."), because that is the
# text the warm-up student learned to follow; the family lives in the record, not the
# sentence. Measured on the held-out user h01 (greedy, 120 test tasks, the same 4 mined
# lessons, family-scoped): these words 0.592, the same with "In <family> tasks, " in front
# 0.517; the earlier pool (ten rules, tool-centred words such as "attachments are saved in
# ...", with that prefix) 0.325; plain 0.475.
FAMILY_PHRASES: dict[tuple[str, str, str, str], str] = {
    ("file_invoice", "move", "dst", "dir"): "invoices are filed in {value}",
    ("sort_newsletters", "move_mail", "folder", "value"): "newsletters belong in the mail folder '{value}'",
    ("save_note", "write_file", "path", "dir"): "notes are saved as {value}",
}
PHRASES: dict[tuple[str, str, str], str] = {
    ("move", "dst", "dir"): "files are filed in {value}",
    ("save_attachment", "path", "dir"): "saved attachments go in {value}",
    ("write_file", "path", "dir"): "files are saved as {value}",
    ("move_mail", "folder", "value"): "mail belongs in the mail folder '{value}'",
    ("send_mail", "body", "last_line"): "every mail ends with the sign-off '{value}'",
    ("send_mail", "body", "first_line"): "every mail starts with '{value}'",
    ("send_mail", "subject", "template"): "the mail subject is '{value}'",
    ("create_event", "duration", "value"): "meetings last {value} minutes unless stated",
    ("create_event", "title", "template"): "the event title is '{value}'",
    ("delete", "path", "ext_set"): "temporary downloads are the {value} files",
    ("add_contact", "*", "presence"): "new contacts always record their {value}",
}
GENERIC_PHRASES: dict[str, str] = {
    "value": "{tool} gets {arg} '{value}'",
    "dir": "{tool} puts {arg} at {value}",
    "template": "{tool} gets {arg} '{value}'",
    "last_line": "the {arg} of {tool} ends with '{value}'",
    "first_line": "the {arg} of {tool} starts with '{value}'",
    "ext_set": "{tool} acts only on the {value} files",
    "presence": "{tool} calls give {value}",
}

_TOKEN = re.compile(r"[A-Za-z]+|\d+|[^A-Za-z\d]")
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")
_SLOT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("<date>", re.compile(r"^\d{4}-\d{2}-\d{2}$")),
    ("<time>", re.compile(r"^\d{1,2}:\d{2}$")),
    ("<address>", re.compile(r"^[^@\s]+@[^@\s]+$")),
    ("<number>", re.compile(r"^\d+$")),
    ("<name>", re.compile(r"^[A-Za-z]+$")),
)


def _kebab(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))


def _appears(value: str, seen: str) -> bool:
    """`value` occurs in `seen` (lower-cased) as a whole: not inside a longer word or number."""
    v = value.strip().lower()
    if not v:
        return False
    pat = (r"(?<![a-z0-9])" if v[0].isalnum() else "") + re.escape(v) + (r"(?![a-z0-9])" if v[-1].isalnum() else "")
    return re.search(pat, seen) is not None


def _copied(value: Any, seen: str) -> bool:
    """The value was looked up (in the instruction or an observation), not chosen."""
    s = str(value)
    if _appears(s, seen):
        return True
    parts = [p.strip() for p in s.split(",") if p.strip()]
    return len(parts) > 1 and all(_appears(p, seen) for p in parts)


def _slot_name(values: Sequence[str], instructions: Sequence[str]) -> str:
    if values and all(any(_kebab(a or b) == v for a, b in _QUOTED.findall(ins)) and v
                      for v, ins in zip(values, instructions, strict=True)):
        return "<title-in-kebab-case>"
    for name, pat in _SLOT_PATTERNS:
        if values and all(pat.match(v) for v in values):
            return name
    return "<value>"


def template(values: Sequence[str], instructions: Sequence[str]) -> tuple[str, int]:
    """What several values share, with the parts that vary as slots, and how many letters
    and digits the constant parts hold: ["invoice-acme-12.pdf", "invoice-hooli-7.pdf"] ->
    ("invoice-<name>-<number>.pdf", 10)."""
    toks = [_TOKEN.findall(v) for v in values]
    n = min(len(t) for t in toks)
    pre = 0
    while pre < n and all(t[pre] == toks[0][pre] for t in toks):
        pre += 1
    suf = 0
    while suf < n - pre and all(t[len(t) - 1 - suf] == toks[0][len(toks[0]) - 1 - suf] for t in toks):
        suf += 1
    head, tail = toks[0][:pre], toks[0][len(toks[0]) - suf:]
    middles = [t[pre:len(t) - suf] for t in toks]
    const = "".join(head + tail)
    mid_text = ["".join(m) for m in middles]
    slot = _slot_name(mid_text, instructions)
    if slot == "<title-in-kebab-case>" or len({len(m) for m in middles}) != 1:
        body = [slot]
    else:
        body = []
        for i in range(len(middles[0])):
            col = [m[i] for m in middles]
            if len(set(col)) == 1:
                body.append(col[0])
                const += col[0]
            else:
                name = _slot_name(col, instructions)
                if not (body and body[-1] == name and name.startswith("<")):
                    body.append(name)
    return "".join(head + body + tail), sum(ch.isalnum() for ch in const)


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _ext(path: str) -> str:
    return posixpath.splitext(path)[1]


@dataclass
class _Obs:
    task: Task
    episode_id: str
    value: Any
    seen: str


@dataclass
class _Dim:
    """Every value one argument of one tool took in the successes of one family."""

    family: str
    tool: str
    arg: str
    param: ToolParam | None
    obs: list[_Obs] = field(default_factory=list)
    presence: list[tuple[str, str, frozenset[str]]] = field(default_factory=list)  # arg "*": task, episode, args
    contrast: set[str] = field(default_factory=set)    # failed episodes that differed here
    omitted: set[str] = field(default_factory=set)     # arg "*": arguments a contrasting failure left out

    @property
    def tasks(self) -> set[str]:
        if self.arg == "*":
            return {t for t, _, _ in self.presence}
        return {o.task.task_id for o in self.obs}

    @property
    def provenance(self) -> tuple[str, ...]:
        ids = sorted({o.episode_id for o in self.obs} | {e for _, e, _ in self.presence}) + sorted(self.contrast)
        return tuple(dict.fromkeys(ids))[:MAX_PROVENANCE]


@dataclass(frozen=True)
class Regularity:
    """One regularity found in the evidence: `value` of `aspect` of a tool's argument,
    in one family ("" = every family that showed it)."""

    family: str
    tool: str
    arg: str
    aspect: str
    value: str
    support: int                  # distinct tasks
    provenance: tuple[str, ...]

    @property
    def condition(self) -> str:
        return f"{self.tool}.{self.arg} {self.aspect}"

    def text(self, family: str | None = None) -> str:
        """The rule as one sentence in the profiles' words (`PHRASES`); `family` picks a
        family's wording (default: the regularity's own family)."""
        fam = self.family if family is None else family
        phrase = (FAMILY_PHRASES.get((fam, self.tool, self.arg, self.aspect))
                  or PHRASES.get((self.tool, self.arg, self.aspect)) or GENERIC_PHRASES[self.aspect])
        body = phrase.format(tool=self.tool, arg=self.arg, value=self.value)
        return f"{body[0].upper()}{body[1:]}."


def parse_condition(condition: str) -> tuple[str, str, str] | None:
    """(tool, arg, aspect) of a condition written by `Regularity.condition`, else None."""
    m = re.fullmatch(r"(\w+)\.([\w*]+) (\w+)", condition.strip())
    return (m[1], m[2], m[3]) if m and m[3] in GENERIC_PHRASES else None


@dataclass
class RulesSummariser:
    """Deterministic, offline summariser: regularities of successful calls across tasks.

    A regularity on one argument needs successes on `min_tasks` distinct tasks of a family,
    or `min_tasks_contrast` when a failure of the same task group made the same call with a
    different value and failed a check about that tool. A failed check that states the value
    it wanted (`corrected_calls`) counts as such a call, and as the contrast.

    With `lessons_only`, only regularities with a contrast become rules: what the agent
    already did in every episode, failures included, tells it nothing new, and such rules
    (title templates, which fields an event gets) cost the held-out user's teacher 0.592 ->
    0.483 when shown beside the lessons (greedy, 120 test tasks, family-scoped).
    """

    min_tasks: int = 3
    min_tasks_contrast: int = 2
    max_ext_set: int = 3
    min_constant_chars: int = 3
    lessons_only: bool = False
    name: str = "rules"

    def __post_init__(self) -> None:
        if self.min_tasks < 2 or self.min_tasks_contrast < 2:
            raise ValueError("a regularity needs at least 2 tasks (min_tasks, min_tasks_contrast >= 2)")

    # -- collecting ----------------------------------------------------------------------

    def _dims(self, evidence: Evidence) -> dict[tuple[str, str, str], _Dim]:
        specs = {s.name: s for s in tool_specs(evidence.env)}
        dims: dict[tuple[str, str, str], _Dim] = {}

        def dim(fam: str, tool: str, arg: str) -> _Dim:
            spec = specs.get(tool)
            param = next((p for p in spec.params if p.name == arg), None) if spec else None
            return dims.setdefault((fam, tool, arg), _Dim(fam, tool, arg, param))

        for g in evidence.groups:
            fam = g.task.family
            for ep in g.successes:
                for c in ep.calls:
                    for arg, value in c.args.items():
                        dim(fam, c.tool, arg).obs.append(_Obs(g.task, ep.episode_id, value, c.seen))
                    dim(fam, c.tool, "*").presence.append((g.task.task_id, ep.episode_id, frozenset(c.args)))
            # A failure's corrected calls count as what the task wanted, with the failure as
            # the contrast on every argument the correction changed.
            for bad in g.failures:
                for fixed in corrected_calls(bad, specs):
                    before = next(c for c in bad.calls if c.t == fixed.t and c.tool == fixed.tool)
                    for arg, value in fixed.args.items():
                        d = dim(fam, fixed.tool, arg)
                        d.obs.append(_Obs(g.task, bad.episode_id, value, fixed.seen))
                        if before.args.get(arg) != value:
                            d.contrast.add(bad.episode_id)
                    d = dim(fam, fixed.tool, "*")
                    d.presence.append((g.task.task_id, bad.episode_id, frozenset(fixed.args)))
                    if set(fixed.args) != set(before.args):
                        d.contrast.add(bad.episode_id)
                        d.omitted |= set(fixed.args) - set(before.args)
            if not g.has_contrast:
                continue
            ref = g.successes[0]
            for bad in g.failures:
                checked = {tool for name in bad.failed_checks for tool in CHECK_TOOLS.get(name.split("(")[0], ())}
                for tool in {c.tool for c in ref.calls}:
                    bad_calls = [c for c in bad.calls if c.tool == tool]
                    if not bad_calls or (bad.failed_checks and tool not in checked):
                        continue
                    good_calls = [c for c in ref.calls if c.tool == tool]
                    for arg in {a for c in good_calls + bad_calls for a in c.args}:
                        good = {json.dumps(c.args.get(arg), sort_keys=True) for c in good_calls}
                        worse = {json.dumps(c.args.get(arg), sort_keys=True) for c in bad_calls}
                        if good != worse:
                            dim(fam, tool, arg).contrast.add(bad.episode_id)
                    if {frozenset(c.args) for c in good_calls} != {frozenset(c.args) for c in bad_calls}:
                        d = dim(fam, tool, "*")
                        d.contrast.add(bad.episode_id)
                        d.omitted |= {a for c in good_calls for a in c.args} - {a for c in bad_calls for a in c.args}
        return dims

    # -- one argument's regularity -------------------------------------------------------

    def _find(self, d: _Dim, specs: Mapping[str, ToolSpec]) -> tuple[str, str] | None:
        """(aspect, value) of the regularity in `d`, or None."""
        if d.arg == "*":
            return self._presence(d, specs)
        if d.param is None:
            return None
        kind = d.param.kind
        values = [o.value for o in d.obs]
        texts = [str(v) for v in values]
        refs = [self._reference(o) for o in d.obs]
        if kind == "mail_id":
            return None
        if len(set(texts)) == 1:
            if any(refs) or not texts[0].strip():
                return None
            return "value", texts[0]
        if d.param.type == "integer":
            return None
        instructions = [o.task.instruction for o in d.obs]
        if kind == "path":
            if all(refs):
                return self._ext_set(d)
            if any(refs):
                return None
            dirs = {posixpath.dirname(t) if not t.endswith("/") else t.rstrip("/") for t in texts}
            if len(dirs) != 1 or not next(iter(dirs)):
                return None
            folder = next(iter(dirs))
            bases = [posixpath.basename(t) for t in texts]
            if all(not b or _copied(b, o.seen) for b, o in zip(bases, d.obs, strict=True)):
                return "dir", folder + "/"
            tmpl, _ = template(bases, instructions)
            return "dir", f"{folder}/{tmpl}"
        if any("\n" in t for t in texts):
            lines = [[ln.strip() for ln in t.splitlines() if ln.strip()] for t in texts]
            if all(len(ls) >= 2 for ls in lines):
                if len({ls[-1] for ls in lines}) == 1:
                    return "last_line", lines[0][-1]
                if len({ls[0] for ls in lines}) == 1:
                    return "first_line", lines[0][0]
            return None
        if all(_copied(v, o.seen) for v, o in zip(values, d.obs, strict=True)):
            return None
        tmpl, n_const = template(texts, instructions)
        if n_const < self.min_constant_chars or "<" not in tmpl:
            return None
        return "template", tmpl

    @staticmethod
    def _reference(o: _Obs) -> bool:
        """The value names something that exists in the task's initial state."""
        st = o.task.initial_state
        v = str(o.value)
        return (v in (st.get("files") or {})
                or any(v == m.get("id") for m in st.get("mail") or [])
                or any(v == e.get("id") for e in st.get("events") or []))

    def _ext_set(self, d: _Dim) -> tuple[str, str] | None:
        chosen_by_task: dict[str, set[str]] = defaultdict(set)
        tasks: dict[str, Task] = {}
        for o in d.obs:
            chosen_by_task[o.task.task_id].add(str(o.value))
            tasks[o.task.task_id] = o.task
        chosen_exts: set[str] = set()
        other_exts: set[str] = set()
        for tid, chosen in chosen_by_task.items():
            folders = {posixpath.dirname(p) for p in chosen}
            files = tasks[tid].initial_state.get("files") or {}
            chosen_exts |= {_ext(p) for p in chosen}
            other_exts |= {_ext(p) for p in files if posixpath.dirname(p) in folders and p not in chosen}
        if (not chosen_exts or "" in chosen_exts or len(chosen_exts) > self.max_ext_set
                or not other_exts or chosen_exts & other_exts):
            return None
        return "ext_set", _join(sorted(chosen_exts))

    @staticmethod
    def _presence(d: _Dim, specs: Mapping[str, ToolSpec]) -> tuple[str, str] | None:
        spec = specs.get(d.tool)
        if spec is None:
            return None
        optional = [p.name for p in spec.params if not p.required]
        given = [g for _, _, g in d.presence]
        always = [p for p in optional if all(p in g for g in given)]
        never = [p for p in optional if not any(p in g for g in given)]
        if len(always) + len(never) != len(optional) or not always:
            return None
        lesson = [p for p in always if p in d.omitted]
        if lesson:          # what the failures left out, and every success gave
            return "presence", _join(lesson)
        fields_ = [p.name for p in spec.params if p.required or p.name in always]
        return "presence", _join(fields_) + (f" but no {_join(never)}" if never else "")

    # -- all regularities ----------------------------------------------------------------

    def regularities(self, evidence: Evidence) -> tuple[list[Regularity], set[tuple[str, str, str]], list[str]]:
        """Family regularities merged into cross-family ones where every family that showed
        the dimension agrees; also the (family, tool, arg) dimensions with enough support
        (judged), and messages."""
        specs = {s.name: s for s in tool_specs(evidence.env)}
        dims = self._dims(evidence)
        judged: set[tuple[str, str, str]] = set()
        found: list[Regularity] = []
        thin: dict[str, int] = {}
        for key in sorted(dims):
            d = dims[key]
            need = self.min_tasks_contrast if d.contrast else self.min_tasks
            n = len(d.tasks)
            if n < need:
                thin[d.family] = max(thin.get(d.family, 0), n)
                continue
            if self.lessons_only and not d.contrast:
                continue       # not judged either: an existing rule about it is left alone
            judged.add(key)
            hit = self._find(d, specs)
            if hit is not None:
                found.append(Regularity(d.family, d.tool, d.arg, hit[0], hit[1], n, d.provenance))
        messages = [f"family {f}: successes on only {n} task(s); a regularity needs {self.min_tasks} "
                    f"({self.min_tasks_contrast} with a contrasting failure)" for f, n in sorted(thin.items())
                    if not any(j[0] == f for j in judged)]
        # Cross-family: the same statement in >= 2 families and no judged family disagreeing.
        by_cond: dict[tuple[str, str, str], list[Regularity]] = defaultdict(list)
        for r in found:
            by_cond[(r.tool, r.arg, r.aspect)].append(r)
        merged: list[Regularity] = []
        for (tool, arg, aspect), regs in sorted(by_cond.items()):
            fams = {r.family for r in regs}
            judged_fams = {f for f, t, a in judged if (t, a) == (tool, arg)}
            if len(fams) >= 2 and len({r.value for r in regs}) == 1 and judged_fams == fams:
                prov = tuple(dict.fromkeys(i for r in regs for i in r.provenance))[:MAX_PROVENANCE]
                merged.append(Regularity("", tool, arg, aspect, regs[0].value, sum(r.support for r in regs), prov))
            else:
                merged += regs
        return merged, judged, messages

    # -- ops against the pool ------------------------------------------------------------

    def propose(self, pool: Sequence[Experience], evidence: Evidence) -> Proposal:
        regs, judged, messages = self.regularities(evidence)
        fam_value = {(r.family, r.condition): r for r in regs if r.family}
        glob = {r.condition: r for r in regs if not r.family}
        glob_fams = {r.condition: {f for f, t, a in judged if f"{t}.{a}" == r.condition.split(" ")[0]}
                     for r in glob.values()}
        ops: list[PrincipleOp] = []
        covered: set[tuple[str, str]] = set()     # (family, condition) an existing rule speaks for
        texts = {_norm(r.text()): r for r in regs}
        for i, item in enumerate(pool):
            if item.kind != "principle" or item.status == "retired":
                continue
            parsed = parse_condition(item.condition)
            if parsed is None:
                r = texts.get(_norm(item.text))
                if r is not None:
                    ops.append(PrincipleOp("AGREE", i, provenance=r.provenance))
                    covered.add((r.family, r.condition))
                continue
            tool, arg, _aspect = parsed
            cond = item.condition
            if item.family:
                r = fam_value.get((item.family, cond))
                g = glob.get(cond)
                if r is None and g is not None and item.family in glob_fams[cond]:
                    # A cross-family rule now speaks for this family: agree if it says the same.
                    if _norm(g.text(item.family)) == _norm(item.text):
                        ops.append(PrincipleOp("AGREE", i, provenance=g.provenance))
                    else:
                        ops.append(PrincipleOp("REMOVE", i))
                    continue
                if r is not None:
                    if (r.family, cond) in covered:     # a second rule about the same thing
                        ops.append(PrincipleOp("REMOVE", i))
                        continue
                    covered.add((r.family, cond))
                    if _norm(r.text()) == _norm(item.text):
                        ops.append(PrincipleOp("AGREE", i, provenance=r.provenance))
                    else:
                        ops.append(PrincipleOp("EDIT", i, text=r.text(), family=r.family, condition=cond,
                                               provenance=r.provenance))
                elif (item.family, tool, arg) in judged:
                    ops.append(PrincipleOp("REMOVE", i))
                continue
            g = glob.get(cond)
            if g is not None:
                if ("", cond) in covered:
                    ops.append(PrincipleOp("REMOVE", i))
                    continue
                covered.add(("", cond))
                if _norm(g.text()) == _norm(item.text):
                    ops.append(PrincipleOp("AGREE", i, provenance=g.provenance))
                else:
                    ops.append(PrincipleOp("EDIT", i, text=g.text(), family="", condition=cond,
                                           provenance=g.provenance))
                continue
            judged_fams = sorted(f for f, t, a in judged if (t, a) == (tool, arg))
            if not judged_fams:
                continue
            agree = [f for f in judged_fams if (f, cond) in fam_value
                     and _norm(replace(fam_value[(f, cond)], family="").text()) == _norm(item.text)]
            if len(agree) == len(judged_fams):
                prov = tuple(i2 for f in agree for i2 in fam_value[(f, cond)].provenance)[:MAX_PROVENANCE]
                ops.append(PrincipleOp("AGREE", i, provenance=prov))
                covered |= {(f, cond) for f in agree}
            else:
                ops.append(PrincipleOp("REMOVE", i))
        for r in regs:
            if (r.family, r.condition) in covered:
                continue
            ops.append(PrincipleOp("ADD", text=r.text(), family=r.family, condition=r.condition,
                                   provenance=r.provenance))
        n_contrast = sum(g.has_contrast for g in evidence.groups)
        messages.append(f"rules summariser: {len(regs)} regularit{'y' if len(regs) == 1 else 'ies'} from "
                        f"{evidence.n_successes} successful episode(s) in {len(evidence.groups)} task group(s) "
                        f"({n_contrast} with a contrasting failure)")
        return Proposal(ops, messages)


# -- OpenAI-compatible endpoints -------------------------------------------------------

PLACEHOLDER_KEY = "EMPTY"
_MAX_ERROR_CHARS = 600


class ChatEndpoint:
    """One chat model behind an OpenAI-compatible API, through the official `openai` client
    (its own retries with backoff on connection errors, timeouts, 429 and 5xx). `complete`
    returns the reply text or raises `EndpointError` saying what failed and where.
    Picklable: the client is built on first use."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 2, temperature: float = 0.0,
                 max_tokens: int = 512) -> None:
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {base_url!r}")
        if not model:
            raise ValueError("model is required (the name the endpoint serves)")
        if timeout <= 0 or max_retries < 0:
            raise ValueError(f"need timeout > 0 and max_retries >= 0, got {timeout}, {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout, self.max_retries = timeout, max_retries
        self.temperature, self.max_tokens = temperature, max_tokens
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(base_url=self.base_url,
                                         api_key=os.environ.get(self.api_key_env) or PLACEHOLDER_KEY,
                                         timeout=self.timeout, max_retries=self.max_retries)
        return self._client

    def complete(self, messages: list[dict[str, str]]) -> str:
        import openai

        where = f"{self.base_url}/chat/completions (model {self.model!r})"
        retried = f"after {self.max_retries} retries"
        try:
            resp = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens)
        except openai.APITimeoutError as exc:
            raise EndpointError(f"timed out after {self.timeout:g}s per attempt, {retried}: {where}") from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc.__context__ or exc
            raise EndpointError(f"cannot connect, {retried}: {where}: {cause}"[:_MAX_ERROR_CHARS]) from exc
        except openai.APIStatusError as exc:
            raise EndpointError(f"HTTP {exc.status_code} {retried} from {where}: {exc.message}"[:_MAX_ERROR_CHARS]) \
                from exc
        except openai.APIError as exc:
            raise EndpointError(f"{type(exc).__name__} from {where}: {exc}"[:_MAX_ERROR_CHARS]) from exc
        if not getattr(resp, "choices", None):
            raise EndpointError(f"no choices in the reply from {where}")
        return resp.choices[0].message.content or ""


# -- the LLM summariser ----------------------------------------------------------------

SUMMARISER_SYSTEM = (
    "You keep a short list of rules for an assistant that operates one user's computer (files, mail, "
    "calendar, contacts) through tools. The user has standing preferences that task instructions never "
    "state; good rules capture them, and other reusable lessons, as one short sentence each, with names, "
    "ids, numbers and dates written as <slots>."
)
SUMMARISER_USER = (
    "Current rules:\n{rules}\n\n{evidence}\n\n"
    "Compare the successful and failed attempts and update the rules. Reply with operations only, one per "
    "line, using the rule numbers above:\n"
    "ADD: <new rule>\nEDIT <number>: <rewritten rule>\nAGREE <number>\nREMOVE <number>\n"
    "Use at most {max_ops} operations."
)
NO_RULES = "(none yet)"
RULE_LINE = "{n}. {text}"
CONTRAST_BLOCK = (
    "Task ({family}): {instruction}\nSuccessful attempt:\n{success}\n"
    "Failed attempt (failed checks: {failed}):\n{failure}"
)
SUCCESS_BLOCK = "Task ({family}): {instruction}\nSuccessful attempt:\n{success}"
NO_CALLS = "  (no changes made)"
MAX_ARG_CHARS = 120


def call_text(tool: str, args: Mapping[str, Any], max_chars: int = MAX_ARG_CHARS, env: str = "stage") -> str:
    """A call as the agent writes it: arguments in the tool's parameter order (trajectories
    store them sorted), string values longer than `max_chars` cut with an ellipsis."""
    from distillery.envs.actions import format_call

    spec = next((s for s in tool_specs(env) if s.name == tool), None)
    order = [p.name for p in spec.params] if spec else []
    keys = [k for k in order if k in args] + sorted(k for k in args if k not in order)
    short = {k: (args[k][:max_chars].rstrip() + "…" if isinstance(args[k], str) and len(args[k]) > max_chars
                 else args[k]) for k in keys}
    return format_call(ToolCall(tool, short))


def _call_text(c: Call) -> str:
    return "  " + call_text(c.tool, c.args)


def _calls_text(ep: EpisodeEvidence) -> str:
    return "\n".join(_call_text(c) for c in ep.calls) or NO_CALLS


def _round_robin(groups: Sequence[GroupEvidence]) -> list[GroupEvidence]:
    """One group of each family in turn, so a few examples cover as many families as they can."""
    by_family: dict[str, list[GroupEvidence]] = defaultdict(list)
    for g in groups:
        by_family[g.task.family].append(g)
    out: list[GroupEvidence] = []
    queues = [by_family[f] for f in sorted(by_family)]
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


@dataclass
class LLMSummariser:
    """ExpeL's insight extraction through a chat endpoint: (a) a failure contrasted with a
    success of the same task, (b) successes of several tasks; one request per update, the
    reply parsed into ops (malformed lines are logged and ignored).

    `check_details` also shows the failed checks' full descriptions (which may name the
    expected values); by default only their types are shown."""

    endpoint: ChatEndpoint
    max_pairs: int = 4
    max_successes: int = 8
    max_ops: int = 8
    check_details: bool = False
    name: str = "llm"

    @classmethod
    def from_url(cls, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 max_retries: int = 2, **kwargs: Any) -> LLMSummariser:
        return cls(ChatEndpoint(base_url, model, api_key_env, timeout, max_retries), **kwargs)

    def messages(self, pool: Sequence[Experience], evidence: Evidence) -> list[dict[str, str]]:
        rules = "\n".join(RULE_LINE.format(n=i + 1, text=e.text) for i, e in enumerate(pool)) or NO_RULES
        blocks = []
        for g in _round_robin([g for g in evidence.groups if g.has_contrast])[: self.max_pairs]:
            bad = g.failures[0]
            failed = ", ".join(bad.failed_checks if self.check_details
                               else sorted({c.split("(")[0] for c in bad.failed_checks})) or "none recorded"
            blocks.append(CONTRAST_BLOCK.format(family=g.task.family, instruction=g.task.instruction,
                                                success=_calls_text(g.successes[0]), failed=failed,
                                                failure=_calls_text(bad)))
        for g in _round_robin([g for g in evidence.groups if g.successes and not g.failures])[: self.max_successes]:
            blocks.append(SUCCESS_BLOCK.format(family=g.task.family, instruction=g.task.instruction,
                                               success=_calls_text(g.successes[0])))
        user = SUMMARISER_USER.format(rules=rules, evidence="\n\n".join(blocks), max_ops=self.max_ops)
        return [{"role": "system", "content": SUMMARISER_SYSTEM}, {"role": "user", "content": user}]

    def propose(self, pool: Sequence[Experience], evidence: Evidence) -> Proposal:
        reply = self.endpoint.complete(self.messages(pool, evidence))
        ops, ignored = parse_ops(reply, len(pool))
        msgs = [f"llm summariser: {len(ops)} op(s) from {self.endpoint.model}"]
        msgs += [f"ignored reply line: {why}" for why in ignored]
        return Proposal(ops[: self.max_ops], msgs)


# ---------------------------------------------------------------------------------------
# One update of the pool
# ---------------------------------------------------------------------------------------


@dataclass
class PoolUpdate:
    pool: list[Experience]
    ops: list[PrincipleOp]
    messages: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.ops)


def update_pool(
    pool: Sequence[Experience],
    tasks: Mapping[str, Task],
    episodes: pl.DataFrame,
    steps: pl.DataFrame,
    summariser: Summariser,
    max_rules: int = 20,
) -> PoolUpdate:
    """One ExpeL update: evidence from the trajectories, ops from the summariser, the new
    pool. Never raises for bad luck in the data or the endpoint, and never drops the pool:
    with no episodes, nothing that succeeded, no regularity, or the summariser's endpoint
    down, the old pool comes back unchanged with messages saying why."""
    old = [copy.deepcopy(e) for e in pool]
    if episodes.height == 0:
        return PoolUpdate(old, [], ["no episodes to learn from: pool unchanged"])
    evidence = build_evidence(tasks, episodes, steps)
    messages = list(evidence.messages)
    if not evidence.groups:
        return PoolUpdate(old, [], messages + ["no episode of a known task: pool unchanged"])
    if evidence.n_successes == 0:
        return PoolUpdate(old, [], messages + [
            f"no successful episode among {evidence.n_failures}: nothing to learn from, pool unchanged"])
    try:
        proposal = summariser.propose(old, evidence)
    except EndpointError as exc:
        return PoolUpdate(old, [], messages + [f"summariser {summariser.name} unavailable: {exc}; pool unchanged"])
    messages += proposal.messages
    if not proposal.ops:
        return PoolUpdate(old, [], messages + [f"summariser {summariser.name} proposed no change: pool unchanged"])
    new = apply_ops(old, proposal.ops, max_rules=max_rules)
    counts = {k: sum(o.op == k for o in proposal.ops) for k in OPS}
    messages.append("applied " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                    + f": {len(old)} -> {len(new)} rules")
    return PoolUpdate(new, list(proposal.ops), messages)

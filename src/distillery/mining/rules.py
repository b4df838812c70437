"""The offline, deterministic summariser: rules from regularities of successful calls.

`RulesSummariser` compares the arguments of successful mutating calls across many tasks of a
family, abstracts what varies (names, ids, numbers, dates, anything copied from the
instruction or an observation) into slots and states what stays constant (folders,
extensions, sign-offs, durations, which optional fields are filled). Within a task group it
contrasts a failure with a success of the same task: a dimension on which they differ, tied
to a failed check about that tool, needs less support. A failed check that states the value
it wanted ("mail_in_folder(folder=reading, mail_id=m1)") also corrects the failure's call
(`corrected_calls`), so failures teach even where no episode of the task succeeded. It never
reads a task's `preferences` or its checks; only the failed checks an episode reported, as a
user's correction would. With `lessons_only`, it keeps only regularities some failure
contrasted.

What it knows of an environment comes from the environment's phrasebook
(`distillery.envs.phrasebook`, through `env_spec(env).phrasebook`): which tools a failed check
is about, what value it wanted, and how lessons read (as the users word their preferences,
the text a student learned to follow). Without one, lessons read in the neutral
`GENERIC_PHRASES` and failed checks correct nothing. `wording="neutral"`, and
`reword_neutrally` for a pool already mined, give the same lessons in the neutral wording, to
measure what the environment's wording is worth.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from distillery.envs.base import ToolParam, ToolSpec, env_spec, tool_specs
from distillery.envs.phrasebook import BASENAME, Phrasebook
from distillery.mining.evidence import Call, EpisodeEvidence, Evidence
from distillery.mining.pool import MAX_PROVENANCE, PrincipleOp, normalise_rule, principle_id
from distillery.mining.principles import Proposal
from distillery.types import Experience, Task, ToolCall

# ---------------------------------------------------------------------------------------
# What a failed check says the call should have been
# ---------------------------------------------------------------------------------------


def _same(a: Any, b: str) -> bool:
    return str(a).strip().lower() == b.strip().lower()


def corrected_calls(episode: EpisodeEvidence, specs: Mapping[str, ToolSpec],
                    phrasebook: Phrasebook | None) -> list[Call]:
    """The calls of a failed episode as its failed checks say they should have been.

    A failed check that states an exact value (the phrasebook's `check_args`) and names one
    of the episode's calls (same mail id, email, date, or file name) gives that call with the
    checked values in place of the agent's: "mail_in_folder(folder=reading, mail_id=m1)"
    against move_mail(mail_id=m1, folder=later) gives move_mail(mail_id=m1, folder=reading).
    This is the environment's feedback on the failure, not the task's hidden preferences;
    only calls that change are returned, each at most once. Without a phrasebook nothing
    says what a check wanted, so there is no correction.
    """
    if phrasebook is None:
        return []
    out: dict[int, dict[str, Any]] = {}
    for name in episode.failed_checks:
        parsed = phrasebook.parse_check(name)
        if parsed is None or parsed[0] not in phrasebook.check_args:
            continue
        ctype, cargs = parsed
        for i, c in enumerate(episode.calls):
            rule = phrasebook.check_args[ctype].get(c.tool)
            if rule is None:
                continue
            key, mapping = rule
            if key == BASENAME:
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


def missing_calls(episode: EpisodeEvidence, phrasebook: Phrasebook | None) -> list[ToolCall]:
    """The calls a failed episode's failed checks say it still needed (`Phrasebook.missing_calls`:
    e.g. the rest of a game's gold path), each distinct call once, in order; none without a
    phrasebook."""
    if phrasebook is None:
        return []
    out: dict[str, ToolCall] = {}
    for name in episode.failed_checks:
        for call in phrasebook.missing_calls(name):
            out.setdefault(json.dumps([call.tool, call.args], sort_keys=True), call)
    return list(out.values())


def _checked_tools(failure: EpisodeEvidence, phrasebook: Phrasebook | None) -> set[str] | None:
    """The tools a failure's failed checks speak about; None when they say nothing about
    tools (no failed check recorded, or no phrasebook to read them): then any tool may be
    what failed."""
    if phrasebook is None or not failure.failed_checks:
        return None
    return {tool for name in failure.failed_checks
            for tool in phrasebook.check_tools.get(phrasebook.check_type(name) or "", ())}


# ---------------------------------------------------------------------------------------
# How a lesson reads
# ---------------------------------------------------------------------------------------

# How a `RulesSummariser` words its rules: through the environment's phrasebook, or neutrally.
WORDINGS: tuple[str, ...] = ("environment", "neutral")

# The neutral wording of each aspect a regularity can have: what the lesson says about the
# call, in the tool's own terms, for environments without a phrasebook and for measuring how
# much an environment's wording matters (`RulesSummariser.wording`, `reword_neutrally`).
GENERIC_PHRASES: dict[str, str] = {
    "value": "{tool} gets {arg} '{value}'",
    "dir": "{tool} puts {arg} at {value}",
    "template": "{tool} gets {arg} '{value}'",
    "last_line": "the {arg} of {tool} ends with '{value}'",
    "first_line": "the {arg} of {tool} starts with '{value}'",
    "ext_set": "{tool} acts only on the {value} files",
    "presence": "{tool} calls give {value}",
}


def parse_condition(condition: str) -> tuple[str, str, str] | None:
    """(tool, arg, aspect) of a condition written by `Regularity.condition`, else None."""
    m = re.fullmatch(r"(\w+)\.([\w*]+) (\w+)", condition.strip())
    return (m[1], m[2], m[3]) if m and m[3] in GENERIC_PHRASES else None


def _phrase(phrasebook: Phrasebook | None, family: str, tool: str, arg: str, aspect: str) -> str:
    own = phrasebook.phrase(family, tool, arg, aspect) if phrasebook is not None else None
    return own or GENERIC_PHRASES[aspect]


def _sentence(phrase: str, tool: str, arg: str, value: str) -> str:
    body = phrase.format(tool=tool, arg=arg, value=value)
    return f"{body[0].upper()}{body[1:]}."


def rule_text(phrasebook: Phrasebook | None, family: str, tool: str, arg: str, aspect: str, value: str) -> str:
    """A lesson as one sentence: in the phrasebook's words for it (the family's, else the
    environment's), else in the neutral `GENERIC_PHRASES`."""
    return _sentence(_phrase(phrasebook, family, tool, arg, aspect), tool, arg, value)


# ---------------------------------------------------------------------------------------
# What several values share
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Regularities and the summariser
# ---------------------------------------------------------------------------------------


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

    def text(self, phrasebook: Phrasebook | None, family: str | None = None) -> str:
        """The rule as one sentence (`rule_text`); `family` picks a family's wording
        (default: the regularity's own family)."""
        fam = self.family if family is None else family
        return rule_text(phrasebook, fam, self.tool, self.arg, self.aspect, self.value)


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

    `wording` is how rules read: ``environment`` (the phrasebook's words) or ``neutral``
    (`GENERIC_PHRASES`; the phrasebook's check knowledge is still used, so the regularities,
    conditions, support and provenance are the same). Rules are compared with the pool by
    their text, so update a pool in the wording it was mined in.
    """

    min_tasks: int = 3
    min_tasks_contrast: int = 2
    max_ext_set: int = 3
    min_constant_chars: int = 3
    lessons_only: bool = False
    wording: str = "environment"
    name: str = "rules"

    def __post_init__(self) -> None:
        if self.min_tasks < 2 or self.min_tasks_contrast < 2:
            raise ValueError("a regularity needs at least 2 tasks (min_tasks, min_tasks_contrast >= 2)")
        if self.wording not in WORDINGS:
            raise ValueError(f"wording must be one of {WORDINGS}, not {self.wording!r}")

    # -- collecting ----------------------------------------------------------------------

    def _dims(self, evidence: Evidence) -> dict[tuple[str, str, str], _Dim]:
        specs = {s.name: s for s in tool_specs(evidence.env)}
        phrasebook = env_spec(evidence.env).phrasebook
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
                for fixed in corrected_calls(bad, specs, phrasebook):
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
            # Calls a failure's failed checks say it still needed (a game's remaining gold
            # path: `Phrasebook.missing_calls`) count as what the task wanted, with the failure
            # as the contrast on every argument it never gave that call.
            for bad in g.failures:
                for want in missing_calls(bad, phrasebook):
                    made = [c for c in bad.calls if c.tool == want.tool]
                    seen = bad.calls[-1].seen if bad.calls else g.task.instruction.lower()
                    for arg, value in want.args.items():
                        d = dim(fam, want.tool, arg)
                        d.obs.append(_Obs(g.task, bad.episode_id, value, seen))
                        if all(c.args.get(arg) != value for c in made):
                            d.contrast.add(bad.episode_id)
            if not g.has_contrast:
                continue
            ref = g.successes[0]
            for bad in g.failures:
                checked = _checked_tools(bad, phrasebook)
                for tool in {c.tool for c in ref.calls}:
                    bad_calls = [c for c in bad.calls if c.tool == tool]
                    if not bad_calls or (checked is not None and tool not in checked):
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
        words = env_spec(evidence.env).phrasebook if self.wording == "environment" else None
        fam_value = {(r.family, r.condition): r for r in regs if r.family}
        glob = {r.condition: r for r in regs if not r.family}
        glob_fams = {r.condition: {f for f, t, a in judged if f"{t}.{a}" == r.condition.split(" ")[0]}
                     for r in glob.values()}
        ops: list[PrincipleOp] = []
        covered: set[tuple[str, str]] = set()     # (family, condition) an existing rule speaks for
        texts = {normalise_rule(r.text(words)): r for r in regs}
        for i, item in enumerate(pool):
            if item.kind != "principle" or item.status == "retired":
                continue
            parsed = parse_condition(item.condition)
            if parsed is None:
                r = texts.get(normalise_rule(item.text))
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
                    if normalise_rule(g.text(words, item.family)) == normalise_rule(item.text):
                        ops.append(PrincipleOp("AGREE", i, provenance=g.provenance))
                    else:
                        ops.append(PrincipleOp("REMOVE", i))
                    continue
                if r is not None:
                    if (r.family, cond) in covered:     # a second rule about the same thing
                        ops.append(PrincipleOp("REMOVE", i))
                        continue
                    covered.add((r.family, cond))
                    if normalise_rule(r.text(words)) == normalise_rule(item.text):
                        ops.append(PrincipleOp("AGREE", i, provenance=r.provenance))
                    else:
                        ops.append(PrincipleOp("EDIT", i, text=r.text(words), family=r.family, condition=cond,
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
                if normalise_rule(g.text(words)) == normalise_rule(item.text):
                    ops.append(PrincipleOp("AGREE", i, provenance=g.provenance))
                else:
                    ops.append(PrincipleOp("EDIT", i, text=g.text(words), family="", condition=cond,
                                           provenance=g.provenance))
                continue
            judged_fams = sorted(f for f, t, a in judged if (t, a) == (tool, arg))
            if not judged_fams:
                continue
            said = normalise_rule(item.text)
            agree = [f for f in judged_fams if (f, cond) in fam_value
                     and normalise_rule(replace(fam_value[(f, cond)], family="").text(words)) == said]
            if len(agree) == len(judged_fams):
                prov = tuple(i2 for f in agree for i2 in fam_value[(f, cond)].provenance)[:MAX_PROVENANCE]
                ops.append(PrincipleOp("AGREE", i, provenance=prov))
                covered |= {(f, cond) for f in agree}
            else:
                ops.append(PrincipleOp("REMOVE", i))
        for r in regs:
            if (r.family, r.condition) in covered:
                continue
            ops.append(PrincipleOp("ADD", text=r.text(words), family=r.family, condition=r.condition,
                                   provenance=r.provenance))
        n_contrast = sum(g.has_contrast for g in evidence.groups)
        messages.append(f"rules summariser: {len(regs)} regularit{'y' if len(regs) == 1 else 'ies'} from "
                        f"{evidence.n_successes} successful episode(s) in {len(evidence.groups)} task group(s) "
                        f"({n_contrast} with a contrasting failure)")
        return Proposal(ops, messages)


# ---------------------------------------------------------------------------------------
# The same pool in neutral words
# ---------------------------------------------------------------------------------------


def reword_neutrally(pool: Sequence[Experience], phrasebook: Phrasebook | None) -> list[Experience]:
    """`pool` with every rule worded through `phrasebook` (by `rule_text`) reworded in the
    neutral `GENERIC_PHRASES`: the same lessons (family, condition, counter, provenance,
    status, order), only the text and, with it, the id change. Pure: `pool` is not touched.

    A rule's value is read back from its text with the phrase its family and condition
    select; a rule whose condition is not a lesson's (`parse_condition`) or whose text is
    not that phrase's sentence (written by hand, by an LLM, or in other words) is kept as it
    is.
    """
    out: list[Experience] = []
    for item in pool:
        new = copy.deepcopy(item)
        parsed = parse_condition(item.condition)
        if parsed is not None:
            tool, arg, aspect = parsed
            value = _value_of(item.text, _phrase(phrasebook, item.family, tool, arg, aspect), tool, arg)
            if value is not None:
                new.text = _sentence(GENERIC_PHRASES[aspect], tool, arg, value)
                new.exp_id = principle_id(new.text, new.family, new.condition)
        out.append(new)
    return out


def _value_of(text: str, phrase: str, tool: str, arg: str) -> str | None:
    """The value that `phrase` turns into `text` (`_sentence`), else None."""
    head, slot, tail = phrase.partition("{value}")
    if not slot or "{value}" in tail:      # no value, or one said twice: not read back
        return None
    head, tail = head.format(tool=tool, arg=arg), tail.format(tool=tool, arg=arg) + "."
    if len(text) < len(head) + len(tail) or not text.endswith(tail):
        return None
    value = text[len(head):len(text) - len(tail)]
    # The sentence capitalises its first letter; rendering the value again checks the rest.
    return value if _sentence(phrase, tool, arg, value) == text else None

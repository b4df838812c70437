"""SIRI phase 1: mine skills from successful plain trajectories, then keep only the skills
that a paired validation shows to help (reference/algorithms.md section 2).

A skill is an `Experience` of kind ``skill``: a *condition* (when it applies) and a
*strategy* (what to do), each one short sentence because it goes into a token-budgeted
prompt. Mining is deterministic by default: a rule summariser turns the most common tool
sequence of a family's successful plain episodes into a call template in which the values
of one task (addresses, mail ids, file names, dates) are slots and the values every episode
shared (the user's invoice folder, the sign-off) stay literal. A summariser callable (a
frozen policy snapshot or an LLM behind `PromptSummariser`) may replace it.

Paired validation is a pure accounting core (`record_trial`, `update_status`) and a driver
(`validate_skills`) that runs each skill's task groups with and without the skill from the
same seeds through a `RunFn`; `make_run_fn` is the real one, built on the rollout engine.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import polars as pl

from distillery.envs.base import tool_specs
from distillery.io import write_parquet, write_text
from distillery.types import Experience, Task, ToolCall, tasks_from_frame

# SIRI leaves N_eval and delta unreported ("Not recoverable" in the spec). Our choices:
# rewards are verification scores in [0, 1], so a skill must raise the mean score of the
# groups it is retrieved for by more than 5 points to be promoted; three task groups are the
# fewest that keep one lucky group from deciding.
DEFAULT_DELTA = 0.05
DEFAULT_MIN_TRIALS = 3

# ---------------------------------------------------------------------------------------
# Templates (data)
# ---------------------------------------------------------------------------------------

SKILL_PROMPT_TEMPLATE = "When {condition}: {strategy}"
CONDITION_FROM_HINT = "the task asks to {hint}"
CONDITION_FROM_WORDS = "the task mentions {words}"
STEP_JOIN = ", then "
REPEAT_SUFFIX = " for each one"
# Slot names by the tool parameter's kind; a suffix says where the value came from.
SLOT_BY_KIND = {"path": "file", "folder": "folder", "mail_id": "mail id", "email": "address",
                "date": "date", "time": "time", "name": "name", "text": "text", "integer": "n"}
FROM_TASK = " from the task"
FOUND = " found"

SUMMARISE_TEMPLATE = """You summarise successful agent episodes into one reusable skill.
Abstract away the values of a single task (names, addresses, ids, file names, dates): write
them as <slots>. Keep what every episode shares. One short sentence each.

{examples}

Reply with exactly two lines:
Condition: <when the skill applies, starting with "the task ...">
Strategy: <the sequence of tool calls with <slots>>"""
SUMMARISE_EXAMPLE = "Task: {instruction}\nActions:\n{actions}"

# Values of these kinds always belong to one task, even if by chance they repeat.
_ENTITY_KINDS = {"mail_id", "email", "date", "time", "name"}
_ENTITY_TEXT = re.compile(r"@|\d{3,}")
_STOPWORDS = frozenset("""a an the to of in on at for from with and or my me i it is are be that this
these those them their your you please all any some into out by as about there where when what
who which get put need needs sitting keep""".split())


# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlainTrajectory:
    """One successful episode run without injected experience, as a summariser sees it.

    `observations[i]` is what the agent saw before `calls[i]` (the reset observation, then
    each previous call's answer): where a value it used could have been read.
    """

    episode_id: str
    task: Task
    calls: list[ToolCall]
    observations: list[str]
    score: float = 1.0


@dataclass(frozen=True)
class SkillDraft:
    """A summariser's output: condition and strategy text, and the episodes it came from."""

    condition: str
    strategy: str
    provenance: list[str] = field(default_factory=list)


class Summariser(Protocol):
    """Turns one family's successful plain trajectories into skill drafts."""

    def __call__(self, family: str, trajectories: Sequence[PlainTrajectory]) -> list[SkillDraft]: ...


class RunFn(Protocol):
    """Runs one episode per entry of `tasks` (repeats allowed) with `skill` in the context,
    or nothing when it is None; episode i's randomness derives from (`seed`, its task, how
    many earlier entries had that task), so two calls differing only in `skill` are paired.
    Returns one reward per entry, in order."""

    def __call__(self, tasks: Sequence[Task], skill: Experience | None, seed: int) -> list[float]: ...


class ValidationResult(NamedTuple):
    skills: list[Experience]
    table: pl.DataFrame


VALIDATION_SCHEMA: dict[str, pl.DataType] = {
    "skill_id": pl.String,
    "condition": pl.String,
    "text": pl.String,
    "family": pl.String,
    "trials": pl.Int64,
    "utility": pl.Float64,
    "status": pl.String,
    "n_groups": pl.Int64,
    "n_with": pl.Int64,
    "n_without": pl.Int64,
    "mean_with": pl.Float64,
    "mean_without": pl.Float64,
}


# ---------------------------------------------------------------------------------------
# Mining
# ---------------------------------------------------------------------------------------


def plain_successes(tasks: Sequence[Task] | pl.DataFrame, episodes: pl.DataFrame,
                    steps: pl.DataFrame) -> list[PlainTrajectory]:
    """The successful episodes that had no experience injected, as `PlainTrajectory`s.

    Only valid calls that the environment accepted are kept, and an immediate repeat of the
    same call is dropped: what is left is what did the work.
    """
    by_id = {t.task_id: t for t in (tasks_from_frame(tasks) if isinstance(tasks, pl.DataFrame) else tasks)}
    plain = episodes.filter(pl.col("success") & (pl.col("injected").list.len() == 0))
    missing = sorted(set(plain["task_id"].to_list()) - set(by_id))
    if missing:
        raise ValueError(f"mine_skills: {len(missing)} successful episodes' tasks are not among the tasks "
                         f"given (e.g. {missing[:3]}); pass the task set the trajectories were run on")
    ids = plain["episode_id"].to_list()
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in steps.filter(pl.col("episode_id").is_in(ids)).sort(["episode_id", "t"]).iter_rows(named=True):
        grouped[row["episode_id"]].append(row)
    out = []
    for ep in plain.sort("episode_id").iter_rows(named=True):
        calls: list[ToolCall] = []
        obs: list[str] = []
        seen_text: list[str] = []
        for s in grouped.get(ep["episode_id"], []):
            seen_text.append(s["observation"] or "")
            if not s["valid"] or s["error"] or not s["tool"]:
                continue
            call = ToolCall(s["tool"], json.loads(s["args_json"] or "{}"))
            if calls and calls[-1] == call:
                continue
            calls.append(call)
            obs.append("\n".join(seen_text))
        out.append(PlainTrajectory(ep["episode_id"], by_id[ep["task_id"]], calls, obs, float(ep["score"])))
    return out


def mine_skills(tasks: Sequence[Task] | pl.DataFrame, episodes: pl.DataFrame, steps: pl.DataFrame, *,
                summariser: Summariser | None = None) -> list[Experience]:
    """Skills (condition, strategy) mined from successful plain trajectories, per family.

    Returns candidate `Experience` records sorted by family, with `provenance` the episodes
    summarised and `counter` their number. Deterministic with the default `RuleSummariser`.
    """
    summarise = summariser or RuleSummariser()
    by_family: dict[str, list[PlainTrajectory]] = defaultdict(list)
    for tr in plain_successes(tasks, episodes, steps):
        if tr.calls:
            by_family[tr.task.family].append(tr)
    skills = []
    for family in sorted(by_family):
        for d in summarise(family, by_family[family]):
            prov = sorted(d.provenance) or sorted(t.episode_id for t in by_family[family])
            skills.append(Experience(
                exp_id=skill_id(family, d.condition, d.strategy), kind="skill", text=d.strategy,
                condition=d.condition, family=family, provenance=prov, counter=len(prov)))
    return skills


def skill_id(family: str, condition: str, strategy: str) -> str:
    h = hashlib.blake2b(f"{condition}\n{strategy}".encode(), digest_size=4).hexdigest()
    return f"skill-{family}-{h}"


def skill_prompt_text(skill: Experience) -> str:
    """The one line a skill contributes to a prompt."""
    if not skill.condition:
        return skill.text
    return SKILL_PROMPT_TEMPLATE.format(condition=skill.condition, strategy=skill.text)


@dataclass
class RuleSummariser:
    """The deterministic summariser: the family's most common tool sequence as a template.

    Consecutive calls of one tool collapse into one step done "for each one". For each
    argument, a value (or a prefix/suffix of it cut at a separator) that every supporting
    episode shared stays literal once at least `min_constant_support` episodes agree and it
    does not look like an entity (an address, an id, three or more digits); the rest is a
    slot named after the tool parameter's kind, marked "from the task" when the value was in
    the instruction or "found" when the agent had seen it in an observation.
    """

    max_per_family: int = 1          # skills per family: the most supported tool sequences
    min_support: int = 1             # episodes a tool sequence needs to become a skill
    min_constant_support: int = 3    # episodes that must agree before a value stays literal
    env: str = "stage"

    def __call__(self, family: str, trajectories: Sequence[PlainTrajectory]) -> list[SkillDraft]:
        kinds = {s.name: {p.name: (p.kind if p.type == "string" else "integer") for p in s.params}
                 for s in tool_specs(self.env)}
        by_sig: dict[tuple[str, ...], list[PlainTrajectory]] = defaultdict(list)
        for tr in trajectories:
            by_sig[tuple(tool for tool, _ in _runs(tr.calls))].append(tr)
        ranked = sorted(by_sig.items(), key=lambda kv: (-len(kv[1]), len(kv[0]), kv[0]))
        drafts = []
        for sig, trs in ranked[: self.max_per_family]:
            if len(trs) < self.min_support:
                break
            parts = [self._step(i, tool, trs, kinds.get(tool, {})) for i, tool in enumerate(sig)]
            drafts.append(SkillDraft(condition=_condition(trs), strategy=STEP_JOIN.join(parts) + ".",
                                     provenance=sorted(t.episode_id for t in trs)))
        return drafts

    def _step(self, pos: int, tool: str, trs: Sequence[PlainTrajectory], kinds: dict[str, str]) -> str:
        # Every occurrence of this step across the supporting episodes, with its context.
        occ: list[tuple[str, ToolCall, str, str]] = []  # (episode, call, instruction, seen text)
        repeated = False
        for tr in trs:
            start, n = _runs(tr.calls)[pos][1]
            repeated |= n > 1
            for i in range(start, start + n):
                occ.append((tr.episode_id, tr.calls[i], tr.task.instruction, tr.observations[i]))
        # Arguments every occurrence passed, in the tool's declared order.
        order = list(kinds) + [a for a in occ[0][1].args if a not in kinds]
        names = [a for a in order if all(a in c.args for _, c, _, _ in occ)]
        args = []
        for a in names:
            values = [c.args[a] for _, c, _, _ in occ]
            args.append(f"{a}={self._value(values, occ, kinds.get(a, 'text'))}")
        return f"{tool}({', '.join(args)})" + (REPEAT_SUFFIX if repeated else "")

    def _value(self, values: list[Any], occ: list[tuple[str, ToolCall, str, str]], kind: str) -> str:
        support = len({e for e, _, _, _ in occ})
        enough = support >= self.min_constant_support
        if kind == "integer" or not all(isinstance(v, str) for v in values):
            if enough and len(set(map(str, values))) == 1 and not _ENTITY_TEXT.search(str(values[0])):
                return str(values[0])
            return f"<{SLOT_BY_KIND['integer']}>"
        entity = kind in _ENTITY_KINDS
        if enough and not entity and len(set(values)) == 1 and not _ENTITY_TEXT.search(values[0]):
            return json.dumps(values[0], ensure_ascii=False)
        prefix = suffix = ""
        if enough and not entity:
            prefix, suffix = _common_affixes(values, kind)
        cores = [v[len(prefix): len(v) - len(suffix)] for v in values]
        slot = "<" + SLOT_BY_KIND.get(kind, "text") + _origin(cores, occ) + ">"
        if not prefix and not suffix:
            return slot
        return json.dumps(prefix + "\x00" + suffix, ensure_ascii=False).replace("\\u0000", slot)


def _runs(calls: Sequence[ToolCall]) -> list[tuple[str, tuple[int, int]]]:
    """Consecutive calls of one tool as (tool, (start, length))."""
    runs: list[tuple[str, tuple[int, int]]] = []
    for i, c in enumerate(calls):
        if runs and runs[-1][0] == c.tool:
            runs[-1] = (c.tool, (runs[-1][1][0], runs[-1][1][1] + 1))
        else:
            runs.append((c.tool, (i, 1)))
    return runs


def _common_affixes(values: list[str], kind: str) -> tuple[str, str]:
    """The longest prefix and suffix all values share, cut at a separator so no word is
    split; for paths the folder and the extension. Entity-like pieces are dropped."""
    seps = "/" if kind in ("path", "folder") else " \n"
    pre = _common_prefix(values)
    cut = max(pre.rfind(s) for s in seps)
    pre = pre[: cut + 1] if cut >= 0 else ""
    suf = _common_prefix([v[::-1] for v in values])[::-1]
    starts = "." if kind in ("path", "folder") else " \n"
    cut = min((i for i, ch in enumerate(suf) if ch in starts), default=-1)
    suf = suf[cut:] if cut >= 0 else ""
    if kind in ("path", "folder") and "/" in suf:
        suf = ""
    if any(len(pre) + len(suf) >= len(v) for v in values):
        suf = ""  # the slot must stand for something in every value
    if any(len(pre) >= len(v) for v in values):
        pre = ""
    return ("" if _ENTITY_TEXT.search(pre) else pre), ("" if _ENTITY_TEXT.search(suf) else suf)


def _common_prefix(values: list[str]) -> str:
    lo, hi = min(values), max(values)
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


def _origin(cores: list[str], occ: list[tuple[str, ToolCall, str, str]]) -> str:
    if all(c and c.lower() in instr.lower() for c, (_, _, instr, _) in zip(cores, occ, strict=True)):
        return FROM_TASK
    if all(c and c in seen for c, (_, _, _, seen) in zip(cores, occ, strict=True)):
        return FOUND
    return ""


def _condition(trs: Sequence[PlainTrajectory]) -> str:
    hints = Counter(t.task.hint for t in trs if t.task.hint)
    if hints:
        return CONDITION_FROM_HINT.format(hint=sorted(hints.items(), key=lambda kv: (-kv[1], kv[0]))[0][0])
    # No hint: the words every instruction shares, minus stop words and entity-like tokens.
    words = [set(re.findall(r"[a-z]+", t.task.instruction.lower())) for t in trs]
    common = sorted(set.intersection(*words) - _STOPWORDS) if words else []
    return CONDITION_FROM_WORDS.format(words=", ".join(common[:6]) or trs[0].task.family.replace("_", " "))


@dataclass
class PromptSummariser:
    """Summarise with a language model: `complete(prompt) -> reply` (a frozen policy
    snapshot's generate, or an OpenAI-compatible endpoint). Shows it up to `max_examples`
    trajectories and parses the two-line reply; a reply it cannot parse raises."""

    complete: Callable[[str], str]
    max_examples: int = 3

    def __call__(self, family: str, trajectories: Sequence[PlainTrajectory]) -> list[SkillDraft]:
        from distillery.envs.actions import format_call

        shown = sorted(trajectories, key=lambda t: (len(t.calls), t.episode_id))[: self.max_examples]
        examples = "\n\n".join(SUMMARISE_EXAMPLE.format(
            instruction=t.task.instruction, actions="\n".join(format_call(c) for c in t.calls)) for t in shown)
        reply = self.complete(SUMMARISE_TEMPLATE.format(examples=examples))
        cond = re.search(r"^\s*Condition:\s*(.+)$", reply, re.M)
        strat = re.search(r"^\s*Strategy:\s*(.+)$", reply, re.M)
        if not cond or not strat:
            raise ValueError(f"summariser reply for family {family!r} lacks 'Condition:' and 'Strategy:' "
                             f"lines: {reply[:300]!r}")
        return [SkillDraft(cond.group(1).strip(), strat.group(1).strip(),
                           sorted(t.episode_id for t in trajectories))]


# ---------------------------------------------------------------------------------------
# Paired validation: the accounting core (pure)
# ---------------------------------------------------------------------------------------


def record_trial(skill: Experience, group_delta: float) -> Experience:
    """One more validated task group: trials + 1 and U(k) the running mean of the groups'
    treatment effects, Δ_g = mean reward with the skill − mean reward without it."""
    if not math.isfinite(group_delta):
        raise ValueError(f"record_trial({skill.exp_id}): group delta must be finite, got {group_delta}")
    n = skill.trials + 1
    return replace(skill, trials=n, utility=skill.utility + (group_delta - skill.utility) / n)


def update_status(skill: Experience, *, delta: float = DEFAULT_DELTA,
                  min_trials: int = DEFAULT_MIN_TRIALS) -> Experience:
    """Promote to ``active`` when U(k) > `delta` after at least `min_trials` validated
    groups; retire when U(k) < 0 after as many. Otherwise the status is kept (an active
    skill whose utility sinks into [0, delta] stays active), and ``retired`` is final.

    SIRI does not report δ or N_eval (reference/algorithms.md section 2 lists them as not
    recoverable); the defaults (`DEFAULT_DELTA` = 0.05 on [0, 1] scores, `DEFAULT_MIN_TRIALS`
    = 3 groups) are our choice.
    """
    if skill.status == "retired" or skill.trials < min_trials:
        return skill
    if skill.utility > delta:
        return replace(skill, status="active")
    if skill.utility < 0:
        return replace(skill, status="retired")
    return skill


# ---------------------------------------------------------------------------------------
# Paired validation: the driver
# ---------------------------------------------------------------------------------------


def retrieved_by_family(skill: Experience, task: Task) -> bool:
    """The default retrieval rule: a skill is retrieved for the tasks of its family."""
    return task.family == skill.family


def validate_skills(skills: Sequence[Experience], tasks: Sequence[Task], run_fn: RunFn, *,
                    pairs_per_group: int = 2, seed: int = 0, delta: float = DEFAULT_DELTA,
                    min_trials: int = DEFAULT_MIN_TRIALS, max_groups: int | None = None,
                    retrieve: Callable[[Experience, Task], bool] = retrieved_by_family) -> ValidationResult:
    """One round of paired validation.

    For every skill not yet retired, each task group where it is retrieved (by default the
    tasks of its family, at most `max_groups` of them) runs `pairs_per_group` episodes with
    the skill and as many without it, from the same seeds; Δ_g is recorded per group and
    the status updated once at the end of the round. The no-skill runs of one set of groups
    are shared by every skill retrieved there. Returns the updated skills (same order) and
    a table with one row per skill (`VALIDATION_SCHEMA`).
    """
    if pairs_per_group < 1:
        raise ValueError("pairs_per_group must be at least 1")
    baselines: dict[tuple[str, ...], list[float]] = {}
    out: list[Experience] = []
    rows: list[dict[str, Any]] = []
    for skill in skills:
        groups = sorted((t for t in tasks if retrieve(skill, t)), key=lambda t: t.task_id)
        if max_groups is not None:
            groups = groups[:max_groups]
        row = {"n_groups": 0, "n_with": 0, "n_without": 0, "mean_with": None, "mean_without": None}
        if skill.status != "retired" and groups:
            jobs = [t for t in groups for _ in range(pairs_per_group)]
            key = tuple(t.task_id for t in groups)
            with_r = _rewards(run_fn, jobs, skill, seed)
            if key not in baselines:
                baselines[key] = _rewards(run_fn, jobs, None, seed)
            base_r = baselines[key]
            for i in range(len(groups)):
                sl = slice(i * pairs_per_group, (i + 1) * pairs_per_group)
                skill = record_trial(skill, _mean(with_r[sl]) - _mean(base_r[sl]))
            skill = update_status(skill, delta=delta, min_trials=min_trials)
            row = {"n_groups": len(groups), "n_with": len(with_r), "n_without": len(base_r),
                   "mean_with": _mean(with_r), "mean_without": _mean(base_r)}
        out.append(skill)
        rows.append({"skill_id": skill.exp_id, "condition": skill.condition, "text": skill.text,
                     "family": skill.family, "trials": skill.trials, "utility": skill.utility,
                     "status": skill.status, **row})
    return ValidationResult(out, pl.DataFrame(rows, schema=VALIDATION_SCHEMA, orient="row"))


def _rewards(run_fn: RunFn, jobs: list[Task], skill: Experience | None, seed: int) -> list[float]:
    r = [float(x) for x in run_fn(jobs, skill, seed)]
    if len(r) != len(jobs):
        who = skill.exp_id if skill else "no skill"
        raise RuntimeError(f"run_fn returned {len(r)} rewards for {len(jobs)} episodes ({who})")
    return r


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def write_validation_table(path: str | Path, table: pl.DataFrame) -> tuple[Path, Path]:
    """Write the table as parquet at `path` and as markdown beside it (`.md`), atomically."""
    path = Path(path)
    md = path.with_suffix(".md")
    write_parquet(table, path)
    write_text(validation_markdown(table), md)
    return path, md


def validation_markdown(table: pl.DataFrame) -> str:
    cols = table.columns

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in table.iter_rows()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# The real run function: the rollout engine with the skill injected
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkillInjector:
    """Puts one skill into the context at every step (an `Injector`; picklable)."""

    skill: Experience

    def __call__(self, ctx: Any) -> tuple[list[str], list[str]]:
        return [self.skill.exp_id], [skill_prompt_text(self.skill)]


def make_run_fn(policy: Any, *, batch_size: int = 64, env_kwargs: dict[str, Any] | None = None,
                reward: str = "score", max_steps: int | None = None) -> RunFn:
    """A `RunFn` that runs `policy` (a `Policy`) in the real environment through
    `rollout.run_batch`, the skill injected by a `SkillInjector`, nothing when it is None.
    `reward` is ``score`` (fraction of checks passed) or ``success`` (0/1)."""
    from distillery.rollout import EpisodeJob, RolloutConfig, episode_seed, run_batch

    if reward not in ("score", "success"):
        raise ValueError(f"reward must be 'score' or 'success', not {reward!r}")

    def run(tasks: Sequence[Task], skill: Experience | None, seed: int) -> list[float]:
        arm = "skill" if skill is not None else "plain"
        seen: Counter[str] = Counter()
        jobs = []
        for t in tasks:
            k = seen[t.task_id]
            seen[t.task_id] += 1
            jobs.append(EpisodeJob(task=t, sample=k, seed=episode_seed(seed, t.task_id, k),
                                   episode_id=f"{t.task_id}:{arm}:k{k}", group=f"{t.task_id}:{arm}"))
        cfg = RolloutConfig(seed=seed, batch_size=batch_size, env_kwargs=dict(env_kwargs or {}),
                            max_steps=max_steps)
        traj = run_batch(policy, jobs, cfg, injector=SkillInjector(skill) if skill is not None else None)
        got = {r["episode_id"]: float(r[reward]) for r in traj.episodes.iter_rows(named=True)}
        return [got[j.episode_id] for j in jobs]

    return run

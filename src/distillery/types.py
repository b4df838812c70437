"""Typed records that cross module boundaries, and the polars schemas of every artifact.

The schemas live here and nowhere else: stages, gates and tests import them. Records are
plain dataclasses; `Task` round-trips through a parquet row (nested fields as JSON text, so
any tool can read the file without our code).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import polars as pl

from distillery.io import json_error

# ---------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test", "heldout_train", "heldout_test")


@dataclass(frozen=True)
class ToolCall:
    """One call of one tool: the unit of a reference solution and of a parsed action."""

    tool: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "args": dict(self.args)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCall:
        return cls(tool=str(d["tool"]), args=dict(d.get("args") or {}))


@dataclass
class Task:
    """A state-based task. Pure data: nothing in it is ever executed.

    `checks` are declarative dicts (`{"type": "file_exists", "path": ...}`) that the
    environment's verifier interprets; `preferences` are the workspace profile's standing
    preferences that this task's checks enforce, as text the instruction does not state.
    """

    task_id: str
    family: str
    split: str
    profile: str
    hint: str
    instruction: str
    initial_state: dict[str, Any]
    reference_solution: list[ToolCall]
    checks: list[dict[str, Any]]
    preferences: list[str] = field(default_factory=list)
    seed: int = 0
    max_steps: int = 15
    env: str = "stage"

    def to_row(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "env": self.env,
            "family": self.family,
            "split": self.split,
            "profile": self.profile,
            "hint": self.hint,
            "instruction": self.instruction,
            "initial_state": json.dumps(self.initial_state, sort_keys=True),
            "reference_solution": json.dumps([c.to_dict() for c in self.reference_solution]),
            "checks": json.dumps(self.checks, sort_keys=True),
            "preferences": list(self.preferences),
            "seed": int(self.seed),
            "max_steps": int(self.max_steps),
            "n_ref_steps": len(self.reference_solution),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        """The task of a task table's row; a field that cannot be read is a ValueError naming it."""
        solution = _json_field(row, "reference_solution", list)
        if not all(isinstance(c, dict) and isinstance(c.get("tool"), str) and isinstance(c.get("args") or {}, dict)
                   for c in solution):
            raise ValueError('reference_solution: expected a list of {"tool": name, "args": {...}} calls')
        checks = _json_field(row, "checks", list)
        if not all(isinstance(c, dict) for c in checks):
            raise ValueError("checks: expected a list of JSON objects")
        max_steps = int(_given(row, "max_steps", 15))
        if max_steps < 1:
            raise ValueError(f"max_steps is {max_steps}: an episode needs at least 1 step")
        return cls(
            task_id=row["task_id"],
            env=_given(row, "env", "stage"),
            family=row["family"],
            split=row["split"],
            profile=row["profile"],
            hint=row["hint"],
            instruction=row["instruction"],
            initial_state=_json_field(row, "initial_state", dict),
            reference_solution=[ToolCall.from_dict(d) for d in solution],
            checks=checks,
            preferences=list(row.get("preferences") or []),
            seed=int(_given(row, "seed", 0)),
            max_steps=max_steps,
        )


def _given(row: dict[str, Any], name: str, default: Any) -> Any:
    """An optional column's value, its default where the column is absent or null."""
    value = row.get(name)
    return default if value is None else value


def _json_field(row: dict[str, Any], name: str, kind: type) -> Any:
    try:
        value = json.loads(row[name])
    except ValueError as e:     # JSONDecodeError, or a number too long to convert
        raise ValueError(f"{name} is not JSON ({json_error(e)})") from e
    if not isinstance(value, kind):
        raise ValueError(f"{name} is a JSON {type(value).__name__}, not {'an object' if kind is dict else 'a list'}")
    return value


TASK_SCHEMA: dict[str, pl.DataType] = {
    "task_id": pl.String,
    "env": pl.String,
    "family": pl.String,
    "split": pl.String,
    "profile": pl.String,
    "hint": pl.String,
    "instruction": pl.String,
    "initial_state": pl.String,
    "reference_solution": pl.String,
    "checks": pl.String,
    "preferences": pl.List(pl.String),
    "seed": pl.Int64,
    "max_steps": pl.Int64,
    "n_ref_steps": pl.Int64,
}


def tasks_to_frame(tasks: list[Task]) -> pl.DataFrame:
    return pl.DataFrame([t.to_row() for t in tasks], schema=TASK_SCHEMA, orient="row")


# Columns a task table must have; the others of TASK_SCHEMA have defaults.
_REQUIRED_TASK_COLUMNS = ("task_id", "family", "split", "profile", "hint", "instruction", "initial_state",
                          "reference_solution", "checks")


class TaskTableError(ValueError):
    """A table that is not a task table of TASK_SCHEMA's shape; the message names the table,
    the column, and for a row the task."""


def tasks_from_frame(frame: pl.DataFrame, source: str = "the task table") -> list[Task]:
    """The tasks of a task table, checked against TASK_SCHEMA first: a missing column, a
    column of another type, a null, or a field that is not the JSON it should be is a
    `TaskTableError` naming `source` (a path, or the option that gave it)."""
    missing = [c for c in _REQUIRED_TASK_COLUMNS if c not in frame.columns]
    if missing:
        raise TaskTableError(f"{source}: not a task table: no column {', '.join(missing)} (a task table has "
                             f"{', '.join(TASK_SCHEMA)})")
    for name, dtype in frame.schema.items():
        want = TASK_SCHEMA.get(name)
        if want is None:
            continue
        if not (dtype == want or (want == pl.Int64 and dtype.is_integer()) or dtype == pl.Null):
            raise TaskTableError(f"{source}: column {name} is {dtype}, not {want}")
        nulls = frame[name].null_count()
        if name in _REQUIRED_TASK_COLUMNS and nulls:
            first = frame.filter(pl.col(name).is_null()).row(0, named=True).get("task_id")
            raise TaskTableError(f"{source}: column {name} has {nulls} null(s), the first in task {first!r}")
    tasks = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        try:
            tasks.append(Task.from_row(row))
        except ValueError as e:
            raise TaskTableError(f"{source}: task {row['task_id']!r} (row {i}): {e}") from e
    return tasks


# ---------------------------------------------------------------------------------------
# Environment results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedAction:
    """Text parsed into a tool call. `valid` is False with an `error` that says why."""

    call: ToolCall | None
    valid: bool
    error: str = ""


@dataclass
class StepResult:
    observation: str
    reward: float
    done: bool
    tool: str = ""
    args_json: str = ""
    valid: bool = True
    error: str = ""
    state_hash: str = ""


@dataclass(frozen=True)
class CheckResult:
    name: str          # human-readable: "mail_sent(to=ann@x.com)"
    type: str          # the check's type: file_exists, mail_sent, unchanged_except, ...
    passed: bool
    detail: str = ""   # why it failed, e.g. "no file at finance/2024/invoice.pdf"


@dataclass
class Verification:
    score: float
    success: bool
    checks: list[CheckResult]

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]


# ---------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One past step as an agent saw it: the observation in front of it, and its action.

    The environment's answer to that action is the next turn's observation (or, for the
    last turn, `Context.observation`).
    """

    observation: str
    action: str


@dataclass
class Context:
    """Everything a policy may condition on for one active episode at one step.

    `task` is present so that the oracle can replay its reference solution; learned
    policies render only `task.instruction` (see agents/prompts.py).
    """

    episode_id: str
    task: Task
    t: int
    observation: str
    history: list[Turn] = field(default_factory=list)
    experience: list[str] = field(default_factory=list)  # injected experience texts
    experience_ids: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass
class ActionOutput:
    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    logprob: float | None = None             # sum of sampled tokens' log-probs
    token_logprobs: list[float] | None = None
    token_ids: list[int] | None = None
    prompt_ids: list[int] | None = None
    error: str = ""        # the policy could not act (e.g. an endpoint down after retries)


# ---------------------------------------------------------------------------------------
# Trajectories
# ---------------------------------------------------------------------------------------

FAILURE_MODES: tuple[str, ...] = (
    "none",
    "invalid_call",
    "wrong_target",
    "incomplete",
    "collateral_damage",
    "step_limit",
    "premature_finish",
    "repetition_loop",
    "error",
)


@dataclass
class Step:
    episode_id: str
    t: int
    observation: str       # what the agent saw before acting (GiGPO's anchor state)
    action_text: str
    tool: str
    args_json: str
    valid: bool
    error: str
    feedback: str          # what the environment answered
    reward: float
    state_hash: str
    tokens_in: int = 0
    tokens_out: int = 0
    logprob: float | None = None
    injected: list[str] = field(default_factory=list)

    def to_row(self) -> dict[str, Any]:
        return _flat_row(self)


@dataclass
class Episode:
    episode_id: str
    env: str
    task_id: str
    family: str
    split: str
    profile: str
    policy: str
    model: str
    iteration: int
    group: str
    sample: int
    seed: int
    success: bool
    score: float
    n_steps: int
    invalid_actions: int
    tokens_in: int
    tokens_out: int
    cost_usd: float
    wall_s: float
    finished: bool
    failure_mode: str
    failed_checks: list[str] = field(default_factory=list)
    injected: list[str] = field(default_factory=list)
    error: str = ""        # why an episode errored (failure_mode "error"), else empty

    def to_row(self) -> dict[str, Any]:
        return _flat_row(self)


def _flat_row(record: Any) -> dict[str, Any]:
    """A record's fields as a dict, lists copied: `dataclasses.asdict` for a record with no
    nested dataclasses, without its recursive deep copy of every value (a rollout turns
    thousands of steps into rows; asdict was a few percent of its time)."""
    return {name: list(value) if isinstance(value := getattr(record, name), list) else value
            for name in record.__dataclass_fields__}


EPISODE_SCHEMA: dict[str, pl.DataType] = {
    "episode_id": pl.String,
    "env": pl.String,
    "task_id": pl.String,
    "family": pl.String,
    "split": pl.String,
    "profile": pl.String,
    "policy": pl.String,
    "model": pl.String,
    "iteration": pl.Int64,
    "group": pl.String,
    "sample": pl.Int64,
    "seed": pl.Int64,
    "success": pl.Boolean,
    "score": pl.Float64,
    "n_steps": pl.Int64,
    "invalid_actions": pl.Int64,
    "tokens_in": pl.Int64,
    "tokens_out": pl.Int64,
    "cost_usd": pl.Float64,
    "wall_s": pl.Float64,
    "finished": pl.Boolean,
    "failure_mode": pl.String,
    "failed_checks": pl.List(pl.String),
    "injected": pl.List(pl.String),
    "error": pl.String,
}

STEP_SCHEMA: dict[str, pl.DataType] = {
    "episode_id": pl.String,
    "t": pl.Int64,
    "observation": pl.String,
    "action_text": pl.String,
    "tool": pl.String,
    "args_json": pl.String,
    "valid": pl.Boolean,
    "error": pl.String,
    "feedback": pl.String,
    "reward": pl.Float64,
    "state_hash": pl.String,
    "tokens_in": pl.Int64,
    "tokens_out": pl.Int64,
    "logprob": pl.Float64,
    "injected": pl.List(pl.String),
}


def episodes_to_frame(episodes: list[Episode]) -> pl.DataFrame:
    return pl.DataFrame([e.to_row() for e in episodes], schema=EPISODE_SCHEMA, orient="row")


def steps_to_frame(steps: list[Step]) -> pl.DataFrame:
    return pl.DataFrame([s.to_row() for s in steps], schema=STEP_SCHEMA, orient="row")


# ---------------------------------------------------------------------------------------
# Experience
# ---------------------------------------------------------------------------------------

ExperienceKind = Literal["instance", "principle", "skill"]
ExperienceStatus = Literal["candidate", "active", "retired"]


@dataclass
class Experience:
    exp_id: str
    kind: str
    text: str
    condition: str = ""
    family: str = ""
    provenance: list[str] = field(default_factory=list)  # episode ids
    counter: int = 0
    utility: float = 0.0
    trials: int = 0
    status: str = "candidate"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Experience:
        return cls(**d)


# ---------------------------------------------------------------------------------------
# Claims: a paper's finding beside what we measured
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One row of `reports/claims.md`, written by the library code that measured it.

    `holds` is the measuring code's verdict under the rule stated in `detail` (None when
    nothing comparable was measured); `spread` and `seeds` say how sure the number is;
    `command` reproduces it. A row is reported whichever way it falls.
    """

    paper: str
    finding: str
    paper_value: str
    measured: str
    holds: bool | None
    detail: str = ""
    spread: str = ""
    seeds: str = ""
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Claim:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"a claim row has unknown field(s) {unknown}: {d}")
        return cls(**d)


# ---------------------------------------------------------------------------------------
# Drafted tasks: every attempt of a model to write a task from a hint, with its verdict
# ---------------------------------------------------------------------------------------

DRAFT_VERDICTS: tuple[str, ...] = ("kept", "rejected", "error")

# Why a draft was rejected (or why no draft came back: endpoint_error). `distillery.tasks`
# assigns them; the attempts gate accepts no other.
DRAFT_REASON_KINDS: tuple[str, ...] = (
    "not_json",          # no JSON object in the reply
    "oversized",         # the reply or the state is larger than allowed
    "schema",            # a field is missing, mistyped, out of range or unknown
    "unknown_check",     # a check type the environment does not declare
    "unknown_tool",      # a reference-solution call of a tool the environment lacks
    "outside_sandbox",   # a path that could leave the episode's sandbox
    "code",              # code, a script or a template in a field
    "missing_check",     # a check every task of the environment must carry is absent
    "build_failed",      # the environment could not build the initial state
    "nondeterministic",  # two resets of the state differ
    "trivial",           # the untouched initial state already passes every check
    "unsolvable",        # the reference solution is invalid, too long or fails a check
    "duplicate",         # the same task as one already kept
    "random_solved",     # a random policy solved it (per task or in the family's probes)
    "endpoint_error",    # the endpoint did not answer
)


@dataclass
class DraftAttempt:
    """One reply of a drafting model, judged. `round` 0 is the first draft for a hint, each
    repair round (the verdict's reasons fed back) adds one; `task_id` is set when kept."""

    attempt_id: str
    run_id: str
    env: str
    family: str
    hint: str
    draft_no: int
    round: int
    verdict: str
    reasons: list[str]
    reason_kinds: list[str]
    task_id: str
    reply: str
    draft_json: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model: str
    base_url: str
    wall_s: float

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


DRAFT_ATTEMPT_SCHEMA: dict[str, pl.DataType] = {
    "attempt_id": pl.String,
    "run_id": pl.String,
    "env": pl.String,
    "family": pl.String,
    "hint": pl.String,
    "draft_no": pl.Int64,
    "round": pl.Int64,
    "verdict": pl.String,
    "reasons": pl.List(pl.String),
    "reason_kinds": pl.List(pl.String),
    "task_id": pl.String,
    "reply": pl.String,
    "draft_json": pl.String,
    "tokens_in": pl.Int64,
    "tokens_out": pl.Int64,
    "cost_usd": pl.Float64,
    "model": pl.String,
    "base_url": pl.String,
    "wall_s": pl.Float64,
}


def draft_attempts_to_frame(attempts: list[DraftAttempt]) -> pl.DataFrame:
    return pl.DataFrame([a.to_row() for a in attempts], schema=DRAFT_ATTEMPT_SCHEMA, orient="row")

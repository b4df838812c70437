"""Draft tasks from the registered families of any environment and keep only those that validate.

Validation follows STAGE-Claw (reference/algorithms.md section 10a). A draft is kept only if
  (a) the generator and the environment are deterministic: the same seed gives the same
      task, and two resets give the same state hash;
  (b) the untouched initial state fails at least one check (doing nothing does not succeed);
  (c) the reference solution runs with every call valid and passes every check;
  (d) it is not trivially solvable: `random_probes` random-policy episodes all fail;
  and it is not a duplicate of a task already kept (same instruction and initial state).
An environment that raises during (a)-(c) breaks its contract (`envs.base.Environment`): the
draft is rejected with the environment, the call and the exception as its reason
(`GuardedEnv`), and a split lost that way says so; a draft function that raises or returns
no `Draft` is the family's bug and stops the run naming the family.
Two probes per task have little power: a family whose tasks a random agent solves a third of
the time still keeps two in five of its drafts. So each family then passes a family check
with stated power (`family_check_plan`): n random episodes over its kept tasks, failing it if
more than c succeed, with n and c the cheapest pair such that a family solved at
`family_detect_rate` (2%) or more fails with probability >= `family_power` (95%) and one solved
at `family_tolerated_rate` (0.2%) or less passes with probability >= 1 - `family_false_alarm`
(99%): 386 episodes, at most 3 solved. The check adds episodes; it never changes which tasks
a passing family keeps. `random_probes: 0` turns it off with the per-task probes.
Human audit (e) has no stand-in here; `validation.json` lists every rejection with its
reasons so a person can audit them, and a family that fails (a split it cannot fill, or the
family check) is reported there with its reasons before the stage fails. Nothing here knows
an environment: families and environments are found by name (`envs.base.family`,
`envs.base.make_env`), and the random probes run through the rollout engine like any other
policy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from typing import Any

from distillery.agents.base import PolicySpec, make_policy
from distillery.config import TasksConfig
from distillery.envs.actions import format_call
from distillery.envs.base import (
    Draft,
    EngineUnavailable,
    Environment,
    NoDraft,
    env_spec,
    families,
    family,
    make_env,
)
from distillery.rollout import RolloutConfig, make_executor, make_jobs, run_batch
from distillery.tasks.drafted import read_kept
from distillery.types import StepResult, Task, Verification


@dataclass(frozen=True)
class Rejection:
    task_id: str
    family: str
    split: str
    reasons: list[str]


@dataclass
class GenerationResult:
    tasks: list[Task]
    rejected: list[Rejection]
    report: dict[str, Any] = field(default_factory=dict)

    def validation_report(self, **extra: Any) -> dict[str, Any]:
        """What `validation.json` records: the report, `extra`, and every rejection with its reasons."""
        return {**self.report, **extra, "rejected": [
            {"task_id": r.task_id, "family": r.family, "split": r.split, "reasons": r.reasons}
            for r in self.rejected]}


class ValidationFailed(RuntimeError):
    """One or more families could not be validated. `.result` holds what was generated, the
    rejections and the report (each family's failure with its reasons): what `validation.json`
    records even when the stage fails."""

    def __init__(self, message: str, result: GenerationResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self):  # keep `.result` when pickled across a process pool
        return (type(self), (str(self), self.result))


# ---------------------------------------------------------------------------------------
# The family check: random episodes over a family's kept tasks, with stated power
# ---------------------------------------------------------------------------------------


def binomial_sf(c: int, n: int, p: float) -> float:
    """P(X > c) for X ~ Binomial(n, p)."""
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0 if n > c else 0.0
    return max(0.0, 1.0 - math.fsum(math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(c + 1)))


@dataclass(frozen=True)
class FamilyCheckPlan:
    """n random episodes over a family's kept tasks; the family fails if more than
    `max_solved` succeed. `power` and `false_alarm` are the probabilities of failing at the
    detected and the tolerated rate (binomial; the episodes spread evenly over tasks of
    unequal difficulty make the count less spread, which only raises the power and lowers the
    false alarm: Hoeffding 1956)."""

    episodes: int
    max_solved: int
    detect_rate: float
    power: float
    tolerated_rate: float
    false_alarm: float

    def fail_probability(self, rate: float) -> float:
        return binomial_sf(self.max_solved, self.episodes, rate)

    def to_dict(self) -> dict[str, Any]:
        return {"episodes": self.episodes, "max_solved": self.max_solved,
                "detect_rate": self.detect_rate, "power": round(self.power, 4),
                "tolerated_rate": self.tolerated_rate, "false_alarm": round(self.false_alarm, 4)}


def family_check_plan(detect_rate: float = 0.02, power: float = 0.95, tolerated_rate: float = 0.002,
                      false_alarm: float = 0.01) -> FamilyCheckPlan:
    """The fewest episodes n, with the smallest allowance c, such that
    P(fail | detect_rate) >= power and P(fail | tolerated_rate) <= false_alarm.

    For a fixed c the power grows with n and so does the false alarm, so the smallest n with
    the power is the best n for that c; c then rises until the false alarm is low enough."""
    if not 0 <= tolerated_rate < detect_rate < 1 or not 0 < power < 1 or not 0 < false_alarm < 1:
        raise ValueError(f"no family check plan for detect_rate={detect_rate}, power={power}, "
                         f"tolerated_rate={tolerated_rate}, false_alarm={false_alarm}")
    for c in range(0, 10_000):
        lo, hi = c + 1, c + 1
        while binomial_sf(c, hi, detect_rate) < power:
            lo, hi = hi, hi * 2
        while lo < hi:                      # the smallest n with the power (monotone in n)
            mid = (lo + hi) // 2
            if binomial_sf(c, mid, detect_rate) >= power:
                hi = mid
            else:
                lo = mid + 1
        fa = binomial_sf(c, lo, tolerated_rate)
        if fa <= false_alarm:
            return FamilyCheckPlan(lo, c, detect_rate, binomial_sf(c, lo, detect_rate),
                                   tolerated_rate, fa)
    raise ValueError("no family check plan under 10,000 allowed successes")


def plan_of(cfg: TasksConfig) -> FamilyCheckPlan | None:
    """The family check `cfg` asks for; None when it is off (`family_detect_rate: 0`, or
    `random_probes: 0`, which turns every random-policy check off)."""
    if not cfg.family_detect_rate or cfg.random_probes <= 0:
        return None
    return family_check_plan(cfg.family_detect_rate, cfg.family_power, cfg.family_tolerated_rate,
                             cfg.family_false_alarm)


def family_check(tasks: list[Task], plan: FamilyCheckPlan, seed: int) -> dict[str, Any]:
    """Run the plan's random episodes over `tasks` (round robin) and say whether the family
    passes. The episodes are the random policy's under its own label, so they are new
    episodes, not the per-task probes again, and they change nothing that is kept."""
    if not tasks:
        return {"passed": True, "episodes": 0, "solved": 0, "solved_tasks": [], **plan.to_dict()}
    k = math.ceil(plan.episodes / len(tasks))
    rcfg = RolloutConfig(k=k, seed=seed, batch_size=env_spec(tasks[0].env).batch_limit(64))
    jobs = make_jobs(tasks, "random-family-check", rcfg)
    # Sample 0 of every task, then sample 1, ...: the first n jobs spread evenly over tasks.
    jobs = sorted(jobs, key=lambda j: j.sample)[: plan.episodes]
    traj = run_batch(make_policy(PolicySpec("random", {"seed": seed}, label="random-family-check")), jobs, rcfg)
    solved = traj.episodes.filter("success")
    n_solved = solved.height
    return {"passed": n_solved <= plan.max_solved, "episodes": traj.episodes.height, "solved": n_solved,
            "solved_tasks": sorted(set(solved["task_id"].to_list()))[:20], **plan.to_dict()}


def task_seed(seed: int, family: str, split: str, profile: str, attempt: int) -> int:
    h = hashlib.blake2b(f"{seed}:{family}:{split}:{profile}:{attempt}".encode(), digest_size=6).digest()
    return int.from_bytes(h, "little")


class DraftFailed(RuntimeError):
    """A family's draft function raised (its exception is the `__cause__`)."""


def task_id_of(family_name: str, split: str, profile: str, attempt: int) -> str:
    return f"{family_name}-{split}-{profile}-{attempt:04d}"


def draft_task(family_name: str, split: str, profile: str, attempt: int, seed: int, max_steps: int) -> Task:
    """One candidate task, a pure function of its coordinates (`NoDraft` from the family when
    it has none there).

    A family's draft function that raises anything else (`DraftFailed`, from its exception),
    or returns something other than a `Draft` (TypeError), is a bug in the family: it stops
    the run (it would fail the same way on every seed), naming the family."""
    fam = family(family_name)
    s = task_seed(seed, family_name, split, profile, attempt)
    task_id = task_id_of(family_name, split, profile, attempt)
    try:
        d = fam.draft(random.Random(s), profile)
    except (NoDraft, EngineUnavailable):
        raise
    except Exception as e:
        # Another type than the generator's own errors, so that no caller mistakes the family's
        # bug for a usage error and prints one line without the family's traceback.
        raise DraftFailed(f"task family {family_name!r} (environment {fam.env!r}) raised {type(e).__name__} "
                          f"while drafting {task_id}: {e}") from e
    if not isinstance(d, Draft):
        raise TypeError(f"task family {family_name!r} (environment {fam.env!r}): its draft function returned "
                        f"a {type(d).__name__}, not a Draft (distillery.envs.base.Draft(instruction, state, "
                        "solution, checks, preferences))")
    return Task(
        task_id=task_id, family=family_name, split=split, profile=profile,
        hint=fam.hint, instruction=d.instruction, initial_state=d.state, reference_solution=d.solution,
        checks=d.checks, preferences=list(d.preferences), seed=s, max_steps=max_steps, env=fam.env,
    )


def content_key(task: Task) -> str:
    """What makes two tasks the same task: their instruction and initial state."""
    blob = json.dumps([task.instruction, task.initial_state], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def random_probe(tasks: list[Task], probes: int, seed: int, held: int = 0) -> Counter[str]:
    """How many of `probes` random-policy episodes per task solved it, by task id (a task no
    episode solved is absent): one batched rollout for all of `tasks`, in batches that keep
    the worker within its environment's `max_instances` with `held` environments built."""
    if not tasks or probes <= 0:
        return Counter()
    rcfg = RolloutConfig(k=probes, seed=seed, batch_size=env_spec(tasks[0].env).batch_limit(64, held))
    traj = run_batch(make_policy(PolicySpec("random", {"seed": seed})), make_jobs(tasks, "random", rcfg), rcfg)
    return Counter(traj.episodes.filter("success")["task_id"].to_list())


# ---------------------------------------------------------------------------------------
# An environment that breaks its contract while validating a draft
# ---------------------------------------------------------------------------------------


class EnvironmentFault(Exception):
    """An environment raised where its contract (`Environment`) says it answers."""

    def __init__(self, env: str, call: str, error: Exception, action: str | None = None) -> None:
        super().__init__(env, call, error, action)
        self.env, self.call, self.error, self.action = env, call, error, action

    @property
    def reason(self) -> str:
        """The draft's rejection reason. Its words before the first colon name the environment
        and the call, so the report counts faults by call, whatever the exception says."""
        text = f"environment {self.env!r} raised in {self.call}: {type(self.error).__name__}: {str(self.error)[:300]}"
        return text + (f" (on the action {self.action[:120]!r})" if self.action is not None else "")


FAULT_PREFIX = "environment "       # how a fault's reason starts (no other reason does)


class GuardedEnv:
    """An environment as validation calls it: an exception from `reset`, `step`, `verify` or
    `state_hash` becomes an `EnvironmentFault` naming the call, which `static_checks` turns
    into the draft's rejection, so a plugin that raises instead of answering loses that draft,
    with the reason in validation.json, rather than stopping the run with a traceback.
    After a fault the environment is rebuilt: its state is unknown, and a fault from leftover
    state would be blamed on the next draft."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.env = make_env(name)

    def _call(self, call: str, *args: Any) -> Any:
        try:
            return getattr(self.env, call)(*args)
        except Exception as e:  # noqa: BLE001 - any exception is the environment's fault
            action = args[0] if call == "step" and isinstance(args[0], str) else None
            self._rebuild()
            raise EnvironmentFault(self.name, call, e, action) from e

    def _rebuild(self) -> None:
        # Its close may fail too: the fault being raised is what the draft's reason reports.
        with contextlib.suppress(Exception):
            self.env.close()
        self.env = make_env(self.name)

    def reset(self, task: Task) -> str:
        return self._call("reset", task)

    def step(self, action_text: str) -> StepResult:
        return self._call("step", action_text)

    def verify(self) -> Verification:
        return self._call("verify")

    def state_hash(self) -> str:
        return self._call("state_hash")

    def close(self) -> None:
        self.env.close()


def static_checks(task: Task, env: Environment | GuardedEnv, again: Task) -> list[str]:
    """Checks (a)-(c) for one task, run in `env`; returns the reasons it fails (none = pass).
    A `GuardedEnv`'s fault ends the checks with the fault as the last reason."""
    reasons: list[str] = []
    if task.to_row() != again.to_row():
        reasons.append("generator is not deterministic: the same seed gave a different task")
    try:
        _run_checks(task, env, reasons)
    except EnvironmentFault as fault:
        reasons.append(fault.reason)
    return reasons


def _run_checks(task: Task, env: Environment | GuardedEnv, reasons: list[str]) -> None:
    env.reset(task)
    h1 = env.state_hash()
    initial = env.verify()
    env.reset(task)
    if env.state_hash() != h1:
        reasons.append("two resets gave different state hashes")
    if initial.success:
        reasons.append("the untouched initial state already passes every check")
    if len(task.reference_solution) > task.max_steps:
        reasons.append(f"the reference solution needs {len(task.reference_solution)} steps > max_steps")
    for i, call in enumerate(task.reference_solution):
        res = env.step(format_call(call))
        if not res.valid:
            reasons.append(f"reference step {i} ({call.tool}) is invalid: {res.error}")
            break
        if res.done:
            break
    final = env.verify()
    if not final.success:
        reasons.append("reference solution fails: " + "; ".join(c.name + ": " + c.detail for c in final.failed))


@dataclass
class FamilyResult:
    """One family's outcome: what it kept, what it rejected and why, and, if it failed, why
    (`failures`: a split it could not fill, the family check)."""

    family: str
    kept: list[Task]
    rejected: list[Rejection]
    failures: list[str] = field(default_factory=list)
    check: dict[str, Any] | None = None      # the family check's record (None: not run)


def generate_family(cfg: TasksConfig, family_name: str, on_kept: Callable[[int], Any] | None = None,
                    attempts_hint: str = "tasks.max_attempts_factor") -> FamilyResult:
    """Draft and validate one family's tasks, every split, then run the family check; a pure
    function of (cfg, family). Never raises for tasks that do not validate: the result says
    why the family failed, so the reasons reach `validation.json`.

    Families are independent (their own seeds, their own duplicate check: the instruction
    templates of two families never coincide), so `generate_tasks` can run them in parallel
    and get the same tasks as one after the other. `on_kept(1)` is called for each task kept
    (a progress bar's `update`). A split that cannot be filled says to raise `attempts_hint`,
    the setting of the factor where the generator was started (params.yaml's key, or an option).
    """
    wanted, profiles = _split_plan(cfg)
    kept: list[Task] = []
    rejected: list[Rejection] = []
    failures: list[str] = []
    seen: dict[str, str] = {}
    env_name = family(family_name).env
    env = GuardedEnv(env_name)
    try:
        for split, need in wanted.items():
            attempt = 0
            got: list[Task] = []
            limit = max(need, 1) * cfg.max_attempts_factor
            while len(got) < need and attempt < limit:
                # Draft a batch, run the cheap checks one by one, then the random probes
                # for the whole batch at once (one batched rollout).
                batch: list[Task] = []
                while len(batch) < need - len(got) and attempt < limit:
                    prof = profiles[split][attempt % len(profiles[split])]
                    try:
                        task = draft_task(family_name, split, prof, attempt, cfg.seed, cfg.max_steps)
                        again = draft_task(family_name, split, prof, attempt, cfg.seed, cfg.max_steps)
                    except NoDraft as e:        # the family says why it has no task here
                        rejected.append(Rejection(task_id_of(family_name, split, prof, attempt), family_name,
                                                  split, [str(e)]))
                        attempt += 1
                        continue
                    attempt += 1
                    reasons = static_checks(task, env, again)
                    key = content_key(task)
                    if key in seen:
                        reasons.append(f"duplicate of {seen[key]}")
                    if reasons:
                        rejected.append(Rejection(task.task_id, family_name, split, reasons))
                        continue
                    seen[key] = task.task_id
                    batch.append(task)
                solved = set(random_probe(batch, cfg.random_probes, cfg.seed, held=1))   # `env` is one
                for task in batch:
                    if task.task_id in solved:
                        rejected.append(Rejection(task.task_id, family_name, split,
                                                  ["a random policy solved it (trivially solvable)"]))
                        continue
                    got.append(task)
                    if on_kept is not None:
                        on_kept(1)
            if len(got) < need:
                failures.append(_split_failure(split, need, len(got), attempt, env_name,
                                               [r for r in rejected if r.split == split], attempts_hint))
            kept += got
    finally:
        env.close()
    plan = plan_of(cfg)
    check = None
    if plan is not None and not failures:
        check = family_check(kept, plan, cfg.seed)
        if not check["passed"]:
            failures.append(
                f"family check: a random policy solved {check['solved']} of {check['episodes']} episodes "
                f"over its {len(kept)} kept tasks (at most {plan.max_solved} allowed: a family solved "
                f"{plan.detect_rate:.0%} of the time fails with probability {plan.power:.3f}); solved: "
                f"{', '.join(check['solved_tasks'][:5])}")
    return FamilyResult(family_name, kept, rejected, failures, check)


def _split_failure(split: str, need: int, got: int, attempts: int, env_name: str,
                   rejected: list[Rejection], attempts_hint: str) -> str:
    """Why a split could not be filled. When the environment raised on every draft it
    rejected, more attempts cannot help: say so, with the first fault, and whom to fix."""
    head = f"{split}: only {got} of {need} drafts validated after {attempts} attempts"
    faults = [next((r for r in rej.reasons if r.startswith(FAULT_PREFIX)), None) for rej in rejected]
    if rejected and all(faults):
        return (f"{head}: environment {env_name!r} raised on every draft it rejected (first, "
                f"{rejected[0].task_id}: {faults[0]}); fix the environment: reset, step, verify and "
                "state_hash must answer, never raise (a bad action is an observation)")
    return f"{head} ({_top_reasons(rejected)}); raise {attempts_hint} or fix the family"


def _top_reasons(rejections: Any, n: int = 3) -> str:
    counts = Counter(r.reasons[0].split(":")[0] for r in rejections if r.reasons)
    return "; ".join(f"{reason} x{k}" for reason, k in counts.most_common(n)) or "no draft rejected"


def _split_plan(cfg: TasksConfig) -> tuple[dict[str, int], dict[str, list[str]]]:
    """How many tasks each split wants (splits that want none left out), and its profiles."""
    # The held-out users' splits: the tasks an agent meets after deployment (it learns from
    # them) and the ones it is tested on.
    wanted = {"train": cfg.n_train_per_family, "test": cfg.n_test_per_family,
              "heldout_train": cfg.n_heldout_train_per_family if cfg.heldout_profiles else 0,
              "heldout_test": cfg.n_heldout_test_per_family if cfg.heldout_profiles else 0}
    profiles = {"train": cfg.train_profiles, "test": cfg.test_profiles,
                "heldout_train": cfg.heldout_profiles, "heldout_test": cfg.heldout_profiles}
    return {s: n for s, n in wanted.items() if n > 0}, profiles


def generate_tasks(cfg: TasksConfig, progress: bool = True,
                   attempts_hint: str = "tasks.max_attempts_factor") -> GenerationResult:
    """Draft, validate and keep `n_*_per_family` tasks of every family and split (a family
    that runs out of attempts says to raise `attempts_hint`).

    Families run on `cfg.executor` (a local process pool, or a dask cluster); the result is
    the same whatever runs them, in family order.
    """
    from tqdm.auto import tqdm

    known = [f.name for f in families(cfg.env)]
    names = cfg.families or known
    unknown = [f for f in names if f not in known]
    if unknown:
        raise ValueError(f"tasks.families: {unknown} are not registered families of environment {cfg.env!r}; "
                         f"registered: {', '.join(known) or 'none'}")
    spec = env_spec(cfg.env)
    for p in cfg.train_profiles + cfg.test_profiles + cfg.heldout_profiles:
        spec.check_profile(p)
    drafted = read_kept(cfg.drafted, cfg.env) if cfg.drafted else []
    wanted, _ = _split_plan(cfg)
    plan = plan_of(cfg)
    by_family: dict[str, FamilyResult] = {}
    bar = tqdm(total=sum(wanted.values()) * len(names), desc="tasks", unit="task", disable=not progress)
    try:
        with make_executor(cfg.executor) as ex:
            if ex is None or len(names) == 1:
                for name in names:
                    by_family[name] = generate_family(cfg, name, bar.update, attempts_hint)
            else:
                futures = {ex.submit(generate_family, cfg, f, None, attempts_hint): f for f in names}
                for fut in as_completed(futures):
                    by_family[futures[fut]] = fut.result()
                    bar.update(len(by_family[futures[fut]].kept))
    finally:
        bar.close()
    kept = [t for f in names for t in by_family[f].kept] + drafted
    rejected = [r for f in names for r in by_family[f].rejected]
    reasons = Counter(r.reasons[0].split(":")[0] for r in rejected)
    validation = ["deterministic generator and reset", "initial state fails a check",
                  "reference solution passes every check", f"{cfg.random_probes} random episodes fail",
                  "no duplicates"]
    if plan is not None:
        validation.append(
            f"family check: at most {plan.max_solved} of {plan.episodes} random episodes over the family's "
            f"kept tasks succeed (a family solved {plan.detect_rate:.1%} of the time or more fails with "
            f"probability >= {plan.power:.3f}; one solved {plan.tolerated_rate:.1%} of the time or less "
            f"fails with probability <= {plan.false_alarm:.3f})")
    report = {
        "kept": {s: sum(t.split == s for t in kept) for s in wanted},
        "n_rejected": len(rejected),
        "families": {f: _family_report(by_family[f]) for f in names},
        "rejection_reasons": dict(reasons.most_common()),
        "validation": validation,
        "family_check": None if plan is None else plan.to_dict(),
        "failed_families": {f: by_family[f].failures for f in names if by_family[f].failures},
    }
    if cfg.drafted:
        report["drafted"] = {"path": cfg.drafted, "tasks": len(drafted)}
    result = GenerationResult(kept, rejected, report)
    if report["failed_families"]:
        lines = [f"  - {f}: {'; '.join(why)}" for f, why in report["failed_families"].items()]
        raise ValidationFailed(
            f"task validation failed for {len(lines)} of {len(names)} families (validation.json lists "
            "every rejection with its reasons):\n" + "\n".join(lines), result)
    _check_no_duplicates_across_families(kept)
    return result


def _family_report(fr: FamilyResult) -> dict[str, Any]:
    counts = Counter(r.reasons[0].split(":")[0] for r in fr.rejected if r.reasons)
    out: dict[str, Any] = {"kept": len(fr.kept), "rejected": len(fr.rejected),
                           "rejection_reasons": dict(counts.most_common())}
    if fr.check is not None:
        out["family_check"] = {k: fr.check[k] for k in ("passed", "episodes", "solved", "solved_tasks")}
    if fr.failures:
        out["failed"] = fr.failures
    return out


def _check_no_duplicates_across_families(tasks: list[Task]) -> None:
    """Each family checks its own duplicates; two families drafting the same task would be a
    bug in their templates, so it stops the stage rather than being quietly dropped."""
    seen: dict[str, str] = {}
    for t in tasks:
        key = content_key(t)
        if key in seen:
            raise RuntimeError(f"tasks {seen[key]} and {t.task_id} of different families are the same task "
                               "(same instruction and initial state): fix one family's template")
        seen[key] = t.task_id

"""Draft tasks from the registered families of any environment and keep only those that validate.

Validation follows STAGE-Claw (reference/algorithms.md section 10a). A draft is kept only if
  (a) the generator and the environment are deterministic: the same seed gives the same
      task, and two resets give the same state hash;
  (b) the untouched initial state fails at least one check (doing nothing does not succeed);
  (c) the reference solution runs with every call valid and passes every check;
  (d) it is not trivially solvable: `random_probes` random-policy episodes all fail;
  and it is not a duplicate of a task already kept (same instruction and initial state).
Human audit (e) has no stand-in here; `validation.json` lists every rejection with its
reasons so a person can audit them. Nothing here knows an environment: families and
environments are found by name (`envs.base.family`, `envs.base.make_env`), and the random
probes run through the rollout engine like any other policy.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from typing import Any

from distillery.agents.base import PolicySpec, make_policy
from distillery.config import TasksConfig
from distillery.envs.actions import format_call
from distillery.envs.base import Environment, env_spec, families, family, make_env
from distillery.rollout import RolloutConfig, make_executor, make_jobs, run_batch
from distillery.tasks.drafted import read_kept
from distillery.types import Task


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


def task_seed(seed: int, family: str, split: str, profile: str, attempt: int) -> int:
    h = hashlib.blake2b(f"{seed}:{family}:{split}:{profile}:{attempt}".encode(), digest_size=6).digest()
    return int.from_bytes(h, "little")


def draft_task(family_name: str, split: str, profile: str, attempt: int, seed: int, max_steps: int) -> Task:
    """One candidate task, a pure function of its coordinates."""
    fam = family(family_name)
    s = task_seed(seed, family_name, split, profile, attempt)
    d = fam.draft(random.Random(s), profile)
    return Task(
        task_id=f"{family_name}-{split}-{profile}-{attempt:04d}", family=family_name, split=split, profile=profile,
        hint=fam.hint, instruction=d.instruction, initial_state=d.state, reference_solution=d.solution,
        checks=d.checks, preferences=list(d.preferences), seed=s, max_steps=max_steps, env=fam.env,
    )


def content_key(task: Task) -> str:
    """What makes two tasks the same task: their instruction and initial state."""
    blob = json.dumps([task.instruction, task.initial_state], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def random_probe(tasks: list[Task], probes: int, seed: int) -> Counter[str]:
    """How many of `probes` random-policy episodes per task solved it, by task id (a task no
    episode solved is absent): one batched rollout for all of `tasks`."""
    if not tasks or probes <= 0:
        return Counter()
    rcfg = RolloutConfig(k=probes, seed=seed, batch_size=64)
    traj = run_batch(make_policy(PolicySpec("random", {"seed": seed})), make_jobs(tasks, "random", rcfg), rcfg)
    return Counter(traj.episodes.filter("success")["task_id"].to_list())


def static_checks(task: Task, env: Environment, again: Task) -> list[str]:
    """Checks (a)-(c) for one task, run in `env`; returns the reasons it fails (none = pass)."""
    reasons = []
    if task.to_row() != again.to_row():
        reasons.append("generator is not deterministic: the same seed gave a different task")
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
    return reasons


def generate_family(cfg: TasksConfig, family_name: str,
                    on_kept: Callable[[int], Any] | None = None) -> tuple[list[Task], list[Rejection]]:
    """Draft and validate one family's tasks, every split; a pure function of (cfg, family).

    Families are independent (their own seeds, their own duplicate check: the instruction
    templates of two families never coincide), so `generate_tasks` can run them in parallel
    and get the same tasks as one after the other. `on_kept(1)` is called for each task kept
    (a progress bar's `update`).
    """
    wanted, profiles = _split_plan(cfg)
    kept: list[Task] = []
    rejected: list[Rejection] = []
    seen: dict[str, str] = {}
    env = make_env(family(family_name).env)
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
                    task = draft_task(family_name, split, prof, attempt, cfg.seed, cfg.max_steps)
                    again = draft_task(family_name, split, prof, attempt, cfg.seed, cfg.max_steps)
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
                solved = set(random_probe(batch, cfg.random_probes, cfg.seed))
                for task in batch:
                    if task.task_id in solved:
                        rejected.append(Rejection(task.task_id, family_name, split,
                                                  ["a random policy solved it (trivially solvable)"]))
                        continue
                    got.append(task)
                    if on_kept is not None:
                        on_kept(1)
            if len(got) < need:
                raise RuntimeError(
                    f"family {family_name} ({split}): only {len(got)} of {need} drafts validated after "
                    f"{attempt} attempts; see the rejections, or raise tasks.max_attempts_factor")
            kept += got
    finally:
        env.close()
    return kept, rejected


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


def generate_tasks(cfg: TasksConfig, progress: bool = True) -> GenerationResult:
    """Draft, validate and keep `n_*_per_family` tasks of every family and split.

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
    by_family: dict[str, tuple[list[Task], list[Rejection]]] = {}
    bar = tqdm(total=sum(wanted.values()) * len(names), desc="tasks", unit="task", disable=not progress)
    try:
        with make_executor(cfg.executor) as ex:
            if ex is None or len(names) == 1:
                for name in names:
                    by_family[name] = generate_family(cfg, name, on_kept=bar.update)
            else:
                futures = {ex.submit(generate_family, cfg, f): f for f in names}
                for fut in as_completed(futures):
                    by_family[futures[fut]] = fut.result()
                    bar.update(len(by_family[futures[fut]][0]))
    finally:
        bar.close()
    kept = [t for f in names for t in by_family[f][0]] + drafted
    rejected = [r for f in names for r in by_family[f][1]]
    _check_no_duplicates_across_families(kept)
    reasons = Counter(r.reasons[0].split(":")[0] for r in rejected)
    report = {
        "kept": {s: sum(t.split == s for t in kept) for s in wanted},
        "n_rejected": len(rejected),
        "families": {f: {"kept": sum(t.family == f for t in kept),
                         "rejected": sum(r.family == f for r in rejected)} for f in names},
        "rejection_reasons": dict(reasons.most_common()),
        "validation": ["deterministic generator and reset", "initial state fails a check",
                       "reference solution passes every check", f"{cfg.random_probes} random episodes fail",
                       "no duplicates"],
    }
    if cfg.drafted:
        report["drafted"] = {"path": cfg.drafted, "tasks": len(drafted)}
    return GenerationResult(kept, rejected, report)


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

"""Benchmark one policy on an environment's test split: what `distillery eval` runs.

    tasks = eval_tasks("stage", tasks_path="data/tasks/tasks.parquet")
    result = run_eval(tasks, PolicySpec("openai", {"base_url": ..., "model": ...}, label="my-model"), "reports/eval/my-model")

The episodes are played in-process (`rollout.run_batch`, one batch of at most `batch_size`
episodes in flight: an endpoint policy then has that many requests to spread over its
connections), gated with the project's `episodes` and `steps` suites, and summarised with the
same functions as the `evaluate` stage: `benchmark_table`, `benchmark_metrics`,
`benchmark_headline` and `render_html`. So a table from `distillery eval` reads like the
pipeline's, and two runs (an endpoint and the same model in-process) compare column by column.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from distillery.agents.base import PolicySpec, make_policy
from distillery.io import error_line
from distillery.journal import JournalHeader, last_finished, open_journal
from distillery.types import (
    Episode,
    Step,
    Task,
    episodes_to_frame,
    steps_to_frame,
    tasks_from_frame,
    tasks_to_frame,
)

DEFAULT_TASKS = "data/tasks/tasks.parquet"


def check_task_format(tasks: Sequence[Task], env: str, source: str) -> None:
    """A ValueError naming the first task that departs from `env`'s draft format (its tools,
    check types and state shape), for an environment that declares one: a hand-made table's
    mistake is named before any episode, instead of erring in every episode's reset."""
    from distillery.envs.base import env_spec

    if env_spec(env).draft_format is None:
        return
    from distillery.tasks.schema import draft_of, structure_problems

    for t in tasks:
        problems = structure_problems(draft_of(t), env)
        if problems:
            raise ValueError(f"{source}: task {t.task_id!r} is not in the {env} task format: "
                             + "; ".join(str(r) for r in problems[:3]))


GENERATED_SPLITS = ("test", "train")   # what the task generator makes


def eval_tasks(env: str, *, tasks_path: str | Path | None = None, split: str = "test",
               families: Sequence[str] = (), per_family: int = 0, generate_per_family: int = 4,
               seed: int = 0, max_steps: int = 15, progress: bool = False,
               warn: Callable[[str], None] | None = None) -> list[Task]:
    """The tasks to benchmark: `split` of the task table at `tasks_path` restricted to `env`
    (and `families`, and the first `per_family` of each, 0 = all); with no table, `split`
    tasks generated and validated for `env`'s families (`generate_per_family` each, at most
    `per_family`) exactly as the `tasks` stage does. A family whose tasks do not all validate keeps those that did:
    a benchmark is still worth running on the others, and `warn` is told which and why."""
    from distillery.envs.base import env_names

    if env not in env_names():
        raise ValueError(f"environment {env!r} is not registered; registered: {', '.join(env_names())}")
    if tasks_path is not None:
        path = Path(tasks_path)
        if path.is_dir():
            raise FileNotFoundError(f"--tasks {path}: a folder; give its task table file (e.g. "
                                    f"{path / 'tasks.parquet'})")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such task table (write one with `distillery tasks` "
                                    "or `dvc repro tasks`)")
        try:
            frame = pl.read_parquet(path).filter((pl.col("env") == env) & (pl.col("split") == split))
        except (pl.exceptions.PolarsError, OSError) as e:
            raise ValueError(f"--tasks {path}: not a parquet task table ({error_line(e)})") from e
        if families:
            unknown = sorted(set(families) - set(frame["family"]))
            if unknown:
                raise ValueError(f"{path} has no {split} tasks of {env} in families {unknown}; it has "
                                 f"{sorted(set(frame['family']))}")
            frame = frame.filter(pl.col("family").is_in(list(families)))
        frame = frame.sort("task_id")
        if per_family:
            frame = frame.filter(pl.int_range(pl.len()).over("family") < per_family)
        if frame.is_empty():
            raise ValueError(f"{path} has no {split} tasks of environment {env!r}" + (
                " (`--tasks ''` generates and validates them instead)" if split in GENERATED_SPLITS else ""))
        repeated = frame.filter(pl.col("task_id").is_duplicated())["task_id"].unique().sort()
        if repeated.len():
            raise ValueError(f"--tasks {path}: task ids must be unique; {repeated.len()} appear more than once "
                             f"(first: {repeated[0]!r})")
        tasks = tasks_from_frame(frame, f"--tasks {path}")
        check_task_format(tasks, env, f"--tasks {path}")
        return tasks
    from distillery.envs.base import families as env_families
    from distillery.tasks.generate import ValidationFailed

    if split not in GENERATED_SPLITS:
        raise ValueError(f"generated tasks are of the {' or '.join(GENERATED_SPLITS)} split, not {split!r}: "
                         "benchmark another split from a task table that holds it (--tasks)")
    known = [f.name for f in env_families(env)]
    unknown = sorted(set(families) - set(known))
    if unknown:
        raise ValueError(f"--family {', '.join(unknown)}: not a task family of {env}; its families: "
                         f"{', '.join(known) or 'none'}")
    n = min(generate_per_family, per_family) if per_family else generate_per_family
    try:
        tasks = generate(env, families, n_train=n if split == "train" else 0, n_test=n if split == "test" else 0,
                         seed=seed, max_steps=max_steps, progress=progress,
                         attempts_hint="the factor (`distillery tasks --max-attempts-factor`, then eval --tasks)").tasks
    except ValidationFailed as e:
        if warn is not None:
            warn(f"{e}\nbenchmarking the {len(e.result.tasks)} tasks that validated")
        tasks = e.result.tasks
    tasks = [t for t in tasks if t.split == split]
    if not tasks:
        raise ValueError(f"no {split} task of {env} validated")
    return tasks


def generate(env: str, families: Sequence[str], *, n_train: int, n_test: int, seed: int = 0,
             max_steps: int = 15, random_probes: int = 3, max_attempts_factor: int | None = None,
             attempts_hint: str = "tasks.max_attempts_factor", progress: bool = False) -> Any:
    """Draft and validate tasks of `env` (`families`, or all its families) with the `tasks`
    stage's own generator and checks (`max_attempts_factor` None: the stage's default); raises
    `tasks.generate.ValidationFailed` naming the families that could not be filled, and
    `attempts_hint` as the setting that raises the factor."""
    from distillery.config import TasksConfig
    from distillery.tasks.generate import generate_tasks

    factor = {} if max_attempts_factor is None else {"max_attempts_factor": max_attempts_factor}
    cfg = TasksConfig(env=env, seed=seed, families=list(families), n_train_per_family=n_train,
                      n_test_per_family=n_test, max_steps=max_steps, random_probes=random_probes, **factor)
    return generate_tasks(cfg, progress=progress, attempts_hint=attempts_hint)


@dataclass
class EvalResult:
    out_dir: Path
    episodes: pl.DataFrame
    steps: pl.DataFrame
    table: pl.DataFrame            # benchmark_table: one row per (policy, family) and (policy, "all")
    details: dict[str, Any]        # benchmark_metrics
    headline: dict[str, Any]
    notes: dict[str, int]          # an endpoint policy's repairs/errors, if it counts them

    @property
    def overall(self) -> dict[str, Any]:
        return self.table.filter(pl.col("family") == "all").row(0, named=True)


JOURNAL = "episodes.partial.jsonl"
# How an endpoint is reached, not what it answers: a run interrupted by timeouts may resume
# with a longer --timeout, more retries or fewer requests in flight.
TRANSPORT_KWARGS = frozenset({"concurrency", "timeout", "max_retries", "api_key_env"})


def eval_journal_header(tasks: Sequence[Task], spec: PolicySpec, *, k: int, seed: int, split: str) -> JournalHeader:
    """What decides a benchmark's episodes, as a journal header: the policy (kind, arguments,
    label and, for a model directory, its files' sizes and times), every task's row, the
    episodes per task, the seed and the split. The batch size and the endpoint's transport
    settings are left out: they change how episodes are played, not their actions, so a run
    may resume with a smaller batch or a longer timeout. (A local model's logprobs move in
    their last digits, about 1e-5, with the batch's make-up: between any two batch sizes, and
    so across a resume.)"""
    kwargs = {name: value for name, value in spec.kwargs.items() if name not in TRANSPORT_KWARGS}
    settings = {"kind": spec.kind, "kwargs": kwargs, "label": spec.name, "k": k, "seed": seed,
                "split": split, "model_files": _model_files(spec), "tasks": [t.to_row() for t in tasks]}
    about: dict[str, Any] = {"policy": spec.name, "kind": spec.kind, "tasks": len(tasks), "k": k, "seed": seed,
                             "split": split}
    about |= {f"policy's {name}": _short(value) for name, value in kwargs.items()}
    return JournalHeader.of(settings, about)


def _short(value: Any) -> Any:
    """A policy argument as a message shows it: numbers and short text as they are."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_files(spec: PolicySpec) -> list[tuple[str, int, int]]:
    """A local model directory's files (name, size, modification time): a model trained again
    in the same place is another policy."""
    folder = spec.kwargs.get("model_dir")
    if not isinstance(folder, str) or not Path(folder).is_dir():
        return []
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in Path(folder).rglob("*") if p.is_file())


@dataclass
class JournaledEpisode:
    episode: Episode
    steps: list[Step]
    notes: Counter[str]        # the policy's notes up to this episode, earlier runs' included


def journaled_episode(line: dict[str, Any]) -> JournaledEpisode:
    """One journal line as the episode it records (TypeError or KeyError for another shape)."""
    return JournaledEpisode(Episode(**line["episode"]), [Step(**s) for s in line["steps"]],
                            Counter({str(k): int(v) for k, v in line["notes"].items()}))


def finished_episodes(records: Sequence[JournaledEpisode]) -> dict[str, JournaledEpisode]:
    """The journaled episodes a resumed run keeps: the last line of each, unless it ended in an
    error (an endpoint that timed out, an environment that raised), which is played again."""
    return last_finished(records, lambda r: r.episode.episode_id, lambda r: r.episode.failure_mode == "error")


class NothingMeasured(RuntimeError):
    """Every episode of an evaluation ended in an error: no table is written."""

    def __init__(self, out: Path, episodes: pl.DataFrame, by_policy: int, by_env: int) -> None:
        errors = episodes.filter(episodes["error"].ne(""))["error"]
        lines = str(errors[0]).strip().splitlines() if errors.len() else []
        super().__init__(f"every episode ended with an error, so nothing was measured and {out} was left as it "
                         f"was; the first: {lines[-1] if lines else '?'}")
        self.by_policy, self.by_env = by_policy, by_env


def run_eval(tasks: Sequence[Task], spec: PolicySpec, out_dir: str | Path, *, k: int = 1, seed: int = 0,
             batch_size: int = 64, split: str = "test", resume: bool = True,
             on_episode: Callable[[Episode], None] | None = None,
             on_resume: Callable[[str], None] | None = None) -> EvalResult:
    """Play `k` episodes of every task with the policy `spec`, gate them, and write to `out_dir`:
    episodes.parquet, steps.parquet, tasks.parquet (what was played), benchmark.json (every
    number, policy -> family), headline.json and benchmark.html.

    Each finished episode is journaled in `out_dir`/episodes.partial.jsonl as it ends, and the
    journal is removed once the tables are written. With `resume`, a journal that an
    interrupted run of the same settings left is read back and only the episodes it lacks are
    played (`on_resume` is told so in a sentence before any is; `on_episode` is called for
    every episode, the journaled ones first); a journal of other settings raises
    `journal.JournalMismatch`. Without `resume` an existing journal is discarded. The tables
    are sorted by episode, so a resumed run writes what an uninterrupted one would: the same
    rows, but for the wall time and a local model's logprobs in their last digits (see
    `eval_journal_header`). The files are written together (none is replaced unless all
    are); a run in which every episode ended in an error raises `NothingMeasured` and writes
    none."""
    from distillery.evaluate.benchmark import benchmark_metrics, benchmark_table
    from distillery.evaluate.headline import benchmark_headline
    from distillery.evaluate.report import render_html
    from distillery.io import write_together
    from distillery.quality import SUITES, gate
    from distillery.rollout import RolloutConfig, Trajectories, error_counts, make_jobs, run_batch

    if not tasks:
        raise ValueError("no tasks to evaluate")
    out = Path(out_dir)
    from distillery.envs.base import env_spec

    journal = open_journal(out / JOURNAL, eval_journal_header(tasks, spec, k=k, seed=seed, split=split),
                           journaled_episode, what="episodes", resume=resume)
    finished = finished_episodes(journal.records)
    earlier_notes = journal.records[-1].notes if journal.records else Counter()
    # An environment that limits its instances per worker (ScienceWorld's JVMs) caps the batch.
    cfg = RolloutConfig(k=k, seed=seed, batch_size=env_spec(tasks[0].env).batch_limit(batch_size))
    policy = make_policy(spec)

    def record(episode: Episode, steps: list[Step]) -> None:
        notes = earlier_notes + Counter(getattr(policy, "notes", None) or {})
        journal.append({"episode": episode.to_row(), "steps": [s.to_row() for s in steps], "notes": dict(notes)})
        if on_episode is not None:
            on_episode(episode)

    try:
        jobs = make_jobs(tasks, policy.name, cfg)
        resumed = [finished[j.episode_id] for j in jobs if j.episode_id in finished]
        if (resumed or journal.damaged) and on_resume is not None:
            on_resume(journal.resuming(len(resumed)))
        for r in resumed:
            if on_episode is not None:
                on_episode(r.episode)
        played = run_batch(policy, [j for j in jobs if j.episode_id not in finished], cfg, on_episode=record)
        notes = dict(earlier_notes + Counter(getattr(policy, "notes", None) or {}))
    finally:
        close = getattr(policy, "close", None)
        if callable(close):
            close()
    traj = Trajectories.concat([played, Trajectories(episodes_to_frame([r.episode for r in resumed]),
                                                     steps_to_frame([s for r in resumed for s in r.steps]))])
    traj = Trajectories(traj.episodes.sort("episode_id"), traj.steps.sort(["episode_id", "t"]))
    refs = {"episodes": traj.episodes, "steps": traj.steps}
    where = {"report_dir": out / "quality", "quarantine_dir": out / "quarantine"}
    for suite, frame in (("episodes", traj.episodes), ("steps", traj.steps)):
        gate(frame, SUITES[suite], source=str(out / f"{suite}.parquet"), refs=refs, **where)
    by_policy, by_env = error_counts(traj.episodes)
    if by_policy + by_env == traj.episodes.height:
        # A wrong --model, an endpoint that is down: success 0 must not pass for a result, nor
        # replace an earlier run's tables. The errored episodes would be played again anyway.
        journal.remove()
        raise NothingMeasured(out, traj.episodes, by_policy, by_env)
    table = benchmark_table(traj.episodes, traj.steps, split=split)
    details = benchmark_metrics(table)
    headline = benchmark_headline(details)
    write_together({out / "tasks.parquet": tasks_to_frame(list(tasks)), out / "episodes.parquet": traj.episodes,
                    out / "steps.parquet": traj.steps, out / "benchmark.json": details,
                    out / "headline.json": headline,
                    out / "benchmark.html": render_html(table, split, len({t.task_id for t in tasks}))})
    journal.remove()
    return EvalResult(out, traj.episodes, traj.steps, table, details, headline, notes)

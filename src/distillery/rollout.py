"""Run many episodes against one policy: batched, in groups, sharded over an executor.

Within a shard every active episode advances together: one `policy.act` call per step for
the whole batch (one forward pass for a model-backed policy), finished episodes leave the
batch and queued ones take their place. Shards run on a `concurrent.futures` executor: a
local process pool, or a Dask cluster when an address is given. Every step is recorded;
an episode whose environment raises becomes a row with failure mode ``error``, not a gap.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import (
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
)
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl

from distillery.agents.base import Policy, PolicySpec, make_policy
from distillery.config import ExecutorConfig
from distillery.envs.base import Environment, make_env, tool_specs
from distillery.evaluate.failures import classify_failure
from distillery.types import (
    ActionOutput,
    Context,
    Episode,
    Step,
    Task,
    Turn,
    episodes_to_frame,
    steps_to_frame,
)


class Injector(Protocol):
    """Chooses the experience shown to the policy at one step: (ids, texts)."""

    def __call__(self, ctx: Context) -> tuple[list[str], list[str]]: ...


@dataclass
class RolloutConfig:
    k: int = 1                      # episodes per task (one group)
    seed: int = 0
    iteration: int = 0
    batch_size: int = 64            # episodes advanced together within a shard
    max_steps: int | None = None    # None: each task's own limit
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    # A policy with `act_deferring` (a local model) carries a call's last few unfinished
    # actions into its next call instead of decoding them alone: fewer decode passes, the
    # same actions up to float rounding (log-probs move in their last bits). Off by default
    # so that recorded runs reproduce bit for bit.
    continuous_batching: bool = False

    def __post_init__(self) -> None:
        # batch_size 0 would start no episode and wait for one forever.
        if self.k < 1 or self.batch_size < 1:
            raise ValueError(f"rollout: k and batch_size must be at least 1, got k={self.k}, "
                             f"batch_size={self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"rollout: max_steps must be at least 1 (or None: each task's own), got {self.max_steps}")


@dataclass(frozen=True)
class EpisodeJob:
    task: Task
    sample: int
    seed: int
    episode_id: str
    group: str


@dataclass
class Trajectories:
    episodes: pl.DataFrame
    steps: pl.DataFrame

    @classmethod
    def concat(cls, parts: Sequence[Trajectories]) -> Trajectories:
        eps = pl.concat([p.episodes for p in parts]) if parts else episodes_to_frame([])
        sts = pl.concat([p.steps for p in parts]) if parts else steps_to_frame([])
        return cls(eps, sts)


def episode_seed(seed: int, task_id: str, sample: int) -> int:
    """A stable per-episode seed: the same whatever the batching or sharding."""
    h = hashlib.blake2b(f"{seed}:{task_id}:{sample}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little")


def make_jobs(tasks: Sequence[Task], policy_name: str, cfg: RolloutConfig) -> list[EpisodeJob]:
    jobs = []
    for task in tasks:
        group = f"{task.task_id}:i{cfg.iteration}"
        for s in range(cfg.k):
            jobs.append(EpisodeJob(
                task=task, sample=s, seed=episode_seed(cfg.seed, task.task_id, s),
                episode_id=f"{task.task_id}:{policy_name}:i{cfg.iteration}:k{s}", group=group,
            ))
    return jobs


# ---------------------------------------------------------------------------------------
# One shard: a batched loop over environments
# ---------------------------------------------------------------------------------------


@dataclass
class _Running:
    job: EpisodeJob
    env: Environment
    observation: str
    started: float
    max_steps: int
    history: list[Turn] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    finished: bool = False
    done: bool = False
    errored: str = ""
    injected: set[str] = field(default_factory=set)


def _finalize(run: _Running, policy: Policy, cfg: RolloutConfig, mutating_tools: set[str]) -> Episode:
    task = run.job.task
    try:
        ver = run.env.verify()
        score, success = ver.score, ver.success
        failed = [c.name for c in ver.failed]
        failed_types = [c.type for c in ver.failed]
    except Exception:  # noqa: BLE001 - a broken verifier is recorded on the episode, not raised
        run.errored = run.errored or traceback.format_exc(limit=3)
        score, success, failed, failed_types = 0.0, False, ["verify raised"], []
    if run.steps:
        run.steps[-1].reward = score
    n_ref_mut = sum(c.tool in mutating_tools for c in task.reference_solution)
    mode = classify_failure(
        success=success,
        failed_check_types=failed_types,
        actions=[s.action_text for s in run.steps],
        valid=[s.valid for s in run.steps],
        mutating=[s.valid and s.tool in mutating_tools and not s.error for s in run.steps],
        finished=run.finished,
        n_ref_mutations=n_ref_mut,
        errored=bool(run.errored),
    )
    return Episode(
        episode_id=run.job.episode_id, env=task.env, task_id=task.task_id, family=task.family,
        split=task.split, profile=task.profile, policy=policy.name, model=policy.model,
        iteration=cfg.iteration, group=run.job.group, sample=run.job.sample, seed=run.job.seed,
        success=success, score=float(score), n_steps=len(run.steps),
        invalid_actions=sum(not s.valid for s in run.steps), tokens_in=run.tokens_in,
        tokens_out=run.tokens_out, cost_usd=run.cost, wall_s=time.perf_counter() - run.started,
        finished=run.finished, failure_mode=mode, failed_checks=failed,
        injected=sorted(run.injected), error=run.errored[-2000:],
    )


# An episode's `error` starts with this when the policy, not the environment, ended it.
POLICY_ERROR_PREFIX = "policy error: "


def error_counts(episodes: pl.DataFrame) -> tuple[int, int]:
    """(episodes ended by a policy error, episodes ended by an error of the environment: its
    reset, step or verify raised) in an episodes table."""
    if "error" not in episodes.columns:
        return 0, 0
    error = episodes["error"].fill_null("")
    by_policy = int(error.str.starts_with(POLICY_ERROR_PREFIX).sum())
    return by_policy, int(error.ne("").sum()) - by_policy


class PolicyError(RuntimeError):
    """A policy broke its contract: `act` raised, or did not return one ActionOutput per context.
    (A policy that cannot produce an action returns one with `error` set: that ends only the
    episode.)"""


def _act(policy: Policy, contexts: list[Context], continuous: bool = False) -> list[ActionOutput | None]:
    """The policy's actions for `contexts`; with `continuous`, None for an action a policy
    with `act_deferring` has not finished yet (it goes on with that action when called again
    with the same context)."""
    deferring = getattr(policy, "act_deferring", None) if continuous else None
    try:
        outputs = deferring(contexts) if deferring is not None else policy.act(contexts)
    except Exception as e:
        raise PolicyError(f"policy {policy.name}: act() raised {type(e).__name__}: {e}") from e
    if not isinstance(outputs, Sequence) or len(outputs) != len(contexts):
        got = f"{len(outputs)} actions" if isinstance(outputs, Sequence) else f"a {type(outputs).__name__}"
        raise PolicyError(f"policy {policy.name}: act() returned {got} for {len(contexts)} contexts; "
                          "it returns one ActionOutput per context, in order")
    wrong = [o for o in outputs if not isinstance(o, ActionOutput) and (o is not None or deferring is None)]
    if wrong:
        raise PolicyError(f"policy {policy.name}: act() returned a {type(wrong[0]).__name__} among its actions; "
                          "each must be a distillery.types.ActionOutput")
    if outputs and all(o is None for o in outputs):
        raise PolicyError(f"policy {policy.name}: act_deferring() finished none of {len(contexts)} actions; "
                          "each call must finish at least one")
    return list(outputs)


def run_batch(
    policy: Policy,
    jobs: Sequence[EpisodeJob],
    cfg: RolloutConfig,
    injector: Injector | None = None,
    on_episode: Callable[[Episode, list[Step]], None] | None = None,
    wrap_env: Callable[[Environment], Environment] | None = None,
) -> Trajectories:
    """Run `jobs` to completion with at most `cfg.batch_size` episodes in flight; `on_episode`
    is given each episode and its steps as it ends.

    `wrap_env` wraps each environment as it is built (e.g. SelSkill's `use_skill` tool,
    which the harness answers without touching the environment's state)."""
    if not jobs:
        return Trajectories(episodes_to_frame([]), steps_to_frame([]))
    env_name = jobs[0].task.env
    mutating_tools = {s.name for s in tool_specs(env_name) if s.mutates}
    pending = deque(jobs)
    free_envs: list[Environment] = []
    active: list[_Running] = []
    episodes: list[Episode] = []
    steps: list[Step] = []

    def start(job: EpisodeJob) -> None:
        if free_envs:
            env = free_envs.pop()
        else:
            env = make_env(job.task.env, **cfg.env_kwargs)
            env = wrap_env(env) if wrap_env is not None else env
        limit = cfg.max_steps or job.task.max_steps
        try:
            obs = env.reset(job.task)
            active.append(_Running(job, env, obs, time.perf_counter(), limit))
        except Exception:  # noqa: BLE001 - recorded as an errored episode
            run = _Running(job, env, "", time.perf_counter(), limit, errored=traceback.format_exc(limit=3))
            run.done = True
            finish(run)

    def finish(run: _Running) -> None:
        ep = _finalize(run, policy, cfg, mutating_tools)
        episodes.append(ep)
        steps.extend(run.steps)
        free_envs.append(run.env)
        if on_episode:
            on_episode(ep, run.steps)

    try:
        while pending or active:
            while pending and len(active) < cfg.batch_size:
                start(pending.popleft())
            if not active:
                continue
            contexts = []
            for r in active:
                ctx = Context(
                    episode_id=r.job.episode_id, task=r.job.task, t=len(r.steps),
                    observation=r.observation, history=list(r.history), seed=r.job.seed,
                )
                if injector is not None:
                    ctx.experience_ids, ctx.experience = injector(ctx)
                contexts.append(ctx)
            outputs = _act(policy, contexts, cfg.continuous_batching)
            for r, ctx, out in zip(active, contexts, outputs, strict=True):
                if out is None:
                    continue     # unfinished: the same context again next call
                r.tokens_in += out.tokens_in
                r.tokens_out += out.tokens_out
                r.cost += out.cost_usd
                r.injected.update(ctx.experience_ids)
                if out.error:
                    # The policy could not produce an action: record why, end the episode.
                    r.errored = f"{POLICY_ERROR_PREFIX}{out.error}"
                    r.done = True
                    continue
                try:
                    res = r.env.step(out.text)
                except Exception:  # noqa: BLE001 - the environment's bug becomes the episode's record
                    r.errored = traceback.format_exc(limit=3)
                    r.done = True
                    continue
                r.steps.append(Step(
                    episode_id=r.job.episode_id, t=len(r.steps), observation=r.observation,
                    action_text=out.text, tool=res.tool, args_json=res.args_json, valid=res.valid,
                    error=res.error, feedback=res.observation, reward=res.reward,
                    state_hash=res.state_hash, tokens_in=out.tokens_in, tokens_out=out.tokens_out,
                    logprob=out.logprob, injected=list(ctx.experience_ids),
                ))
                r.history.append(Turn(observation=r.observation, action=out.text))
                r.observation = res.observation
                if res.done:
                    r.finished, r.done = True, True
                elif len(r.steps) >= r.max_steps:
                    r.done = True
            for r in [r for r in active if r.done]:
                finish(r)
            active = [r for r in active if not r.done]
    finally:
        for env in free_envs + [r.env for r in active]:
            env.close()
    return Trajectories(episodes_to_frame(episodes), steps_to_frame(steps))


# Policies that answer a whole batch of steps in one call (a model's forward pass, an
# endpoint's concurrent requests): their shards should be as large as the pool allows, and
# building one (loading a model) is worth doing once per worker, not once per shard.
BATCHING_KINDS = frozenset({"hf", "openai"})

_worker = threading.local()


def _worker_policy(spec: PolicySpec) -> Policy:
    """The policy `spec` describes, built once per worker thread and kept for its next shards
    (only the latest spec: a long-lived Dask worker serving many models keeps one)."""
    key = repr(spec)
    if getattr(_worker, "key", None) != key:
        _worker.policy, _worker.key = make_policy(spec), key
    return _worker.policy


def _run_shard(spec: PolicySpec, jobs: list[EpisodeJob], cfg: RolloutConfig,
               injector: Injector | None) -> Trajectories:
    return run_batch(_worker_policy(spec), jobs, cfg, injector)


def _limit_threads(threads: int) -> None:
    """Pool initializer: this worker's share of the cores for torch's and BLAS's threads, so
    that N workers do not each start one thread per core (set before torch is imported). A
    thread count already in the environment (the user's, or a grid job's) stands."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def worker_threads(workers: int) -> int:
    """Cores per worker of a local pool of `workers` processes (at least one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


# ---------------------------------------------------------------------------------------
# Many shards
# ---------------------------------------------------------------------------------------


@contextmanager
def make_executor(cfg: ExecutorConfig) -> Iterator[Executor | None]:
    """The executor shards run on; None means run inline in this process."""
    if cfg.address:
        from dask.distributed import Client

        with Client(cfg.address) as client:
            yield client.get_executor()
        return
    if cfg.kind == "inline" or cfg.workers == 1 and cfg.kind != "thread":
        yield None
        return
    if cfg.kind == "thread":
        with ThreadPoolExecutor(cfg.workers) as ex:
            yield ex
        return
    import multiprocessing as mp

    # spawn, not fork: a forked child of a process holding torch/OpenMP threads can hang.
    with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_limit_threads,
                             initargs=(worker_threads(cfg.workers),)) as ex:
        yield ex


def shard(jobs: Sequence[EpisodeJob], n: int) -> list[list[EpisodeJob]]:
    """Split jobs into n shards, keeping each task's group together."""
    groups: dict[str, list[EpisodeJob]] = {}
    for j in jobs:
        groups.setdefault(j.group, []).append(j)
    shards: list[list[EpisodeJob]] = [[] for _ in range(max(1, n))]
    for i, g in enumerate(groups.values()):
        shards[i % len(shards)].extend(g)
    return [s for s in shards if s]


def run_episodes(
    tasks: Sequence[Task],
    spec: PolicySpec,
    cfg: RolloutConfig,
    executor: ExecutorConfig | None = None,
    injector: Injector | None = None,
    progress: bool = True,
) -> Trajectories:
    """Run K episodes of every task with the policy `spec` describes; sorted, deterministic."""
    from tqdm.auto import tqdm

    executor = executor or ExecutorConfig(kind="inline")
    jobs = make_jobs(tasks, spec.name, cfg)
    bar = tqdm(total=len(jobs), desc=f"rollout {spec.name}", unit="ep", disable=not progress)
    parts: list[Trajectories] = []
    with make_executor(executor) as ex:
        if ex is None:
            policy = make_policy(spec)
            parts.append(run_batch(policy, jobs, cfg, injector, on_episode=lambda *_: bar.update()))
        else:
            if executor.address:
                n = max(8, len(jobs) // 50)
            elif spec.kind in BATCHING_KINDS:
                n = executor.workers        # one large batch per worker
            else:
                n = executor.workers * 4    # small shards balance cheap, uneven episodes
            futures: dict[Future[Trajectories], int] = {}
            for s in shard(jobs, n):
                futures[ex.submit(_run_shard, spec, s, cfg, injector)] = len(s)
            for fut in as_completed(futures):
                parts.append(fut.result())
                bar.update(futures[fut])
    bar.close()
    out = Trajectories.concat(parts)
    return Trajectories(out.episodes.sort("episode_id"), out.steps.sort(["episode_id", "t"]))

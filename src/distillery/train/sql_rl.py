"""RL of the SQL student: Dual-Track GRPO (TRUST-SQL) or standard GRPO, on-policy.

Each iteration k:

1. **Rollouts.** The current policy samples K episodes of each of `tasks_per_iteration`
   learning tasks (train-split databases outside the validation slice), one group per
   task, a different slice each iteration.
2. **Outcomes.** Each episode is replayed in a fresh `SqlEnv` with the same options and
   scored there (`sql_outcomes`): execution reward (1.0 right, 0.2 runs but wrong, 0
   otherwise), the format bonus (`format_reward` when every turn was valid, all four
   phases' actions occurred and the answer was submitted), the schema reward of the last
   proposal (0.4 table F1 + 0.6 column F1), counted only for a correct answer under
   `schema_gate: correct` (the reference's default) or always, and the proposal step.
   Only what the policy wrote is scored; tool output never is.
3. **Advantages** (`train.dual_track`). `dual`: execution(+format) and schema rewards
   normalised within their groups separately; the schema advantage lands on the steps up
   to and including the last accepted proposal, the execution advantage on every step.
   `grpo`: the rewards summed, one advantage on every step.
4. **Update.** One training sequence per episode (rendered exactly as acting rendered it,
   `agents.prompts.episode_example_ids`; an episode too long for that falls back to one
   sequence per step), with per-token advantages and prefix marks; the loss is
   `dual_track_loss` (PPO-clip, decoupled 0.2/0.28, token means) against the log-probs the
   policy had before the update, at the sampling temperature, + `kl_coef` x low_var_kl
   to the starting model (0 by default, the reference's). `grpo` is the same loss with
   w_s = 0 and the summed advantage.
5. **Validation.** Greedy execution accuracy on the validation tasks (train-split
   databases the warm-up never saw), logged every iteration; the test split is never
   touched here.

Iterations are checkpointed (`<run>/iter-<k>/`: model and result); a rerun skips finished
ones, and the rollouts of an iteration are seeded by (seed, k).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
import torch

from distillery.agents.hf import policy_from_model
from distillery.agents.prompts import (
    PromptConfig,
    action_ids,
    episode_example_ids,
    render_compact_ids,
)
from distillery.config import _f, check_choices
from distillery.envs.sql.env import SqlEnv
from distillery.envs.sql.prefill import DEFAULT_SCHEMA_CHARS, adapted_reference, task_db
from distillery.envs.sql.schema import load_meta
from distillery.envs.sql.tools import EXPLORE_TOOLS
from distillery.io import write_text
from distillery.quality.sql_traj_suites import SQL_OUTCOME_SCHEMA
from distillery.rollout import EpisodeJob, RolloutConfig, Trajectories, episode_seed, run_batch
from distillery.train.config import TrainConfig
from distillery.train.data import Batch, Example
from distillery.train.dual_track import DEFAULT_SCHEMA_WEIGHT, dual_track_frame, dual_track_loss
from distillery.train.examples import episode_turns
from distillery.train.loop import train
from distillery.train.losses import IGNORE_INDEX, low_var_kl, masked_token_mean
from distillery.train.rl import score_examples, tempered_logprobs
from distillery.types import Context, Task

# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------


@dataclass
class SqlTrackConfig:
    """`sql_track`: what every SQL stage shares: the environment's options (the baselines of
    the comparisons are settings of it, `envs.sql.prefill`) and the validation slice."""

    section: ClassVar[str] = "sql_track"

    schema_prompt: Literal["none", "full", "gold"] = _f(
        "none", "none (discover with tools) | full (every table in the first observation, cut to "
        "schema_prompt_chars) | gold (the gold tables prefilled)")
    schema_prompt_chars: int = _f(DEFAULT_SCHEMA_CHARS, "character budget of the prefilled schema text")
    propose_phase: bool = _f(True, "false: no Propose phase (SQL runs without a proposal; the oracle does not propose)")
    validation_dbs: int = _f(10, "train databases held out to tune on (before the held-out ones by id): no "
                                 "demonstration or RL task comes from them")
    heldout_dbs: int = _f(10, "train databases (the last by id) held out for reporting only: unseen databases "
                              "of the training domains and naming styles")
    learn_reference_calls: int = _f(5, "learning tasks (demonstrations and RL) are the questions the oracle answers "
                                       "in at most this many calls (5: one table); 0 = all")

    def __post_init__(self) -> None:
        check_choices(self, self.section)
        if self.schema_prompt_chars < 100 or min(self.validation_dbs, self.heldout_dbs, self.learn_reference_calls) < 0:
            raise ValueError("sql_track.schema_prompt_chars must be at least 100; validation_dbs, heldout_dbs and "
                             "learn_reference_calls >= 0")

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `SqlEnv` (only the non-defaults, so that a default run builds
        the environment exactly as every other caller does)."""
        out: dict[str, Any] = {}
        if self.schema_prompt != "none":
            out |= {"schema_prompt": self.schema_prompt, "schema_prompt_chars": self.schema_prompt_chars}
        if not self.propose_phase:
            out["propose_phase"] = False
        return out

    @property
    def label(self) -> str:
        """tools | full-schema | gold-schema, + no-propose."""
        parts = ["tools" if self.schema_prompt == "none" else f"{self.schema_prompt}-schema"]
        return "+".join(parts + ([] if self.propose_phase else ["no-propose"]))


@dataclass
class SqlRLConfig:
    """`sql_rl` stage: Dual-Track GRPO (or standard GRPO) of the SQL student."""

    section: ClassVar[str] = "sql_rl"

    method: Literal["dual", "grpo"] = _f("dual", "dual (Dual-Track GRPO) | grpo (one summed reward)")
    model_dir: str = _f("models/sql_warmup", "the policy to start from (and the KL reference)")
    iterations: int = _f(3, "rollout -> advantages -> update cycles")
    tasks_per_iteration: int = _f(16, "learning tasks per iteration (a different slice each time)")
    k: int = _f(8, "episodes per task: one group (the reference's 8)")
    temperature: float = _f(0.8, "sampling temperature (the reference's 0.8); the loss scores the same distribution")
    max_new_tokens: int = _f(120, "cap on one action's tokens")
    max_steps: int = _f(10, "turn cap of every rollout and validation episode (the reference's 10)")
    batch_size: int = _f(96, "episodes decoded together")
    schema_weight: float = _f(DEFAULT_SCHEMA_WEIGHT, "w_s, weight of the exploration track (dual only)")
    schema_gate: Literal["correct", "always"] = _f(
        "correct", "count the schema reward only for a correct answer (the reference's default) or always")
    format_reward: float = _f(0.1, "bonus when every turn was valid, all phases' actions occurred and it submitted")
    adv_mode: Literal["mean_std_norm", "mean_norm"] = _f("mean_std_norm", "group normalisation of both tracks")
    clip_low: float = _f(0.2, "PPO clip, lower bound")
    clip_high: float = _f(0.28, "PPO clip, upper bound (decoupled)")
    kl_coef: float = _f(0.0, "low_var_kl to the starting model (the reference's 0)")
    epochs: int = _f(1, "update passes over each iteration's sequences")
    validation_tasks: int = _f(40, "validation tasks evaluated greedily after every iteration (0: none)")
    seed: int = _f(0, "seeds rollouts, data order and training")
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=1e-4, min_lr_ratio=1.0, warmup_steps=0, epochs=1.0, batch_size=64, weight_decay=0.0,
        max_seq_len=1280, save_every=0, keep_checkpoints=1),
        metadata={"help": "the optimiser of each update (epochs is set from `epochs`)"})

    def __post_init__(self) -> None:
        check_choices(self, self.section)
        if (self.iterations < 1 or self.k < 2 or self.tasks_per_iteration < 1 or self.epochs < 1 or self.max_steps < 1
                or self.batch_size < 1):
            raise ValueError("sql_rl.iterations, tasks_per_iteration, epochs, max_steps and batch_size must be >= 1 "
                             "and k >= 2 (a group of one has no baseline)")
        if self.temperature <= 0 or self.schema_weight < 0 or self.format_reward < 0:
            raise ValueError("sql_rl.temperature must be > 0; schema_weight and format_reward >= 0")


@dataclass
class SqlRLRun:
    """What decides an RL run besides its inputs' bytes (`train.card.resumable_run_dir`)."""

    rl: SqlRLConfig
    track: SqlTrackConfig


# ---------------------------------------------------------------------------------------
# Tasks: the learning pool, the validation slice, the options' references
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSplit:
    """The train split's tasks by database: learning (demonstrations and RL, filtered by
    `learn_reference_calls`), validation (tuning) and held-out (reporting); all templates in
    the last two."""

    learn: list[Task]
    validation: list[Task]
    heldout: list[Task]


def split_train(tasks: Sequence[Task], track: SqlTrackConfig) -> TrainSplit:
    """Train databases sorted by id: the last `heldout_dbs` are held out, the `validation_dbs`
    before them validate, the rest are learned from."""
    ids = sorted({str(t.initial_state.get("db_id", "")) for t in tasks if t.split == "train"})
    n_out = min(len(ids), track.heldout_dbs)
    n_val = min(len(ids) - n_out, track.validation_dbs)
    heldout = set(ids[len(ids) - n_out:])
    val = set(ids[len(ids) - n_out - n_val: len(ids) - n_out])
    train_tasks = sorted((t for t in tasks if t.split == "train"), key=lambda t: t.task_id)
    limit = track.learn_reference_calls
    learn = [t for t in train_tasks if t.initial_state.get("db_id") not in heldout | val
             and (limit == 0 or len(t.reference_solution) <= limit)]
    return TrainSplit(learn, [t for t in train_tasks if t.initial_state.get("db_id") in val],
                      [t for t in train_tasks if t.initial_state.get("db_id") in heldout])


def spread_slice(tasks: Sequence[Task], n: int) -> list[Task]:
    """`n` tasks spread evenly over `tasks` (sorted by id): every database and template."""
    ts = sorted(tasks, key=lambda t: t.task_id)
    if n <= 0 or n >= len(ts):
        return ts
    return [ts[(i * len(ts)) // n] for i in range(n)]


def adapt_tasks(tasks: Sequence[Task], track: SqlTrackConfig, root: str | Path | None = None) -> list[Task]:
    """Every task's reference solution rewritten for the environment's options (the oracle's
    demonstrations; identical tasks under the defaults)."""
    if track.schema_prompt == "none" and track.propose_phase:
        return list(tasks)
    return [adapted_reference(t, load_meta(task_db(t, root)), track.schema_prompt, track.propose_phase,
                              track.schema_prompt_chars) for t in tasks]


# ---------------------------------------------------------------------------------------
# Outcomes: each episode replayed and scored by the environment
# ---------------------------------------------------------------------------------------



def _format_ok(tools: Sequence[str], valid: Sequence[bool], submitted: bool, propose_phase: bool) -> bool:
    """The reference's format reward condition: every turn well formed, all four phases'
    actions present (Propose only when the environment has that phase), no error, answered."""
    need = {"execute_sql", "submit"} | ({"propose_schema"} if propose_phase else set())
    return (submitted and all(valid) and need <= set(tools) and any(t in EXPLORE_TOOLS for t in tools))


def sql_outcomes(tasks: Mapping[str, Task], traj: Trajectories, env_kwargs: Mapping[str, Any] | None = None,
                 ) -> pl.DataFrame:
    """One row per episode (`quality.sql_traj_suites.SQL_OUTCOME_SCHEMA`): its actions replayed in a fresh `SqlEnv`
    with `env_kwargs`, then `SqlEnv.outcome()` and counts of its exploration. A replay whose
    step validity differs from the recorded one is flagged (`replay_matches` False)."""
    env = SqlEnv(**dict(env_kwargs or {}))
    rows = []
    by_ep: dict[str, list[tuple[str, bool, str]]] = {}
    for ep, action, valid, tool in traj.steps.sort(["episode_id", "t"]).select(
            "episode_id", "action_text", "valid", "tool").iter_rows():
        by_ep.setdefault(ep, []).append((action, bool(valid), tool or ""))
    try:
        for e in traj.episodes.sort("episode_id").iter_rows(named=True):
            task = tasks[e["task_id"]]
            env.reset(task)
            acts = by_ep.get(e["episode_id"], [])
            same = True
            described: set[str] = set()
            for action, valid, _tool in acts:
                res = env.step(action)
                same = same and res.valid == valid
                if res.valid and res.tool == "describe_table":
                    described.add(json.loads(res.args_json).get("table", "").strip().lower())
            out = env.outcome()
            sc = out.schema
            n_tables = len(env.meta.tables) if env.meta is not None else 0
            tools = [t for _, _, t in acts]
            rows.append({
                "episode_id": e["episode_id"], "task_id": e["task_id"], "group": e["group"], "policy": e["policy"],
                "submitted": out.submitted, "ran": out.ran, "correct": out.submitted and out.correct,
                "execution_reward": out.execution_reward,
                "format_ok": _format_ok(tools, [v for _, v, _ in acts], out.submitted, env.propose_phase),
                "schema_reward": out.schema_reward,
                "table_f1": sc.tables.f1 if sc else 0.0, "column_f1": sc.columns.f1 if sc else 0.0,
                "table_recall": sc.tables.recall if sc else 0.0, "column_recall": sc.columns.recall if sc else 0.0,
                "proposal_step": out.proposal_step, "n_hallucinated": len(out.hallucinated),
                "n_violations": len(out.violations), "n_steps": len(acts),
                "n_explore_calls": sum(t in EXPLORE_TOOLS for t in tools),
                "n_tables_described": len(described), "n_tables": n_tables,
                "described_share": len(described) / n_tables if n_tables else 0.0,
                "replay_matches": same,
            })
    finally:
        env.close()
    return pl.DataFrame(rows, schema=SQL_OUTCOME_SCHEMA) if rows else pl.DataFrame(schema=SQL_OUTCOME_SCHEMA)


def episode_rewards(outcomes: pl.DataFrame, cfg: SqlRLConfig) -> pl.DataFrame:
    """Adds `exec_track` (execution reward + format bonus) and `schema_track` (the schema
    reward, gated by `schema_gate`; 0 without a proposal) to the outcomes."""
    gate = pl.col("correct") if cfg.schema_gate == "correct" else pl.lit(True)
    return outcomes.with_columns(
        exec_track=pl.col("execution_reward") + pl.when(pl.col("format_ok")).then(cfg.format_reward).otherwise(0.0),
        schema_track=pl.when(gate & (pl.col("proposal_step") >= 0)).then(pl.col("schema_reward")).otherwise(0.0),
    )


def episode_advantages(outcomes: pl.DataFrame, cfg: SqlRLConfig) -> pl.DataFrame:
    """Per episode: `adv_exec` (every step), `adv_schema` (steps <= `proposal_step`), by method."""
    r = episode_rewards(outcomes, cfg)
    adv = dual_track_frame(r, execution="exec_track", schema="schema_track", mode=cfg.adv_mode)
    if cfg.method == "dual":
        return adv.with_columns(adv_exec=pl.col("exec_advantage"), adv_schema=pl.col("schema_advantage"))
    return adv.with_columns(adv_exec=pl.col("grpo_advantage"), adv_schema=pl.lit(0.0))


# ---------------------------------------------------------------------------------------
# Training sequences with per-token advantages
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceStats:
    episodes: int
    whole_episode: int
    per_step: int
    tokens: int


def rl_sequences(tasks: Mapping[str, Task], traj: Trajectories, advantages: pl.DataFrame, tok: Any,
                 prompt: PromptConfig, max_new_tokens: int | None = None) -> tuple[list[Example], SequenceStats]:
    """One sequence per episode with per-token extras `adv_exec`, `adv_schema` and `prefix`
    (1 on the action tokens of steps t <= proposal_step), 0 off the action tokens; an
    episode that does not fit as one sequence gives one sequence per step, each rendered as
    acting rendered it.

    An action cut off at `max_new_tokens` never produced the end marker that the rendering
    puts after it, so that marker is context there, not a target: reinforcing (or, with a
    negative advantage, suppressing) a stop the policy never chose would teach it to stop
    (or not to stop) for nothing it did."""
    adv = {r["episode_id"]: r for r in advantages.select(
        "episode_id", "adv_exec", "adv_schema", "proposal_step").iter_rows(named=True)}
    cut: set[tuple[str, int]] = set()
    if max_new_tokens is not None and "tokens_out" in traj.steps.columns:
        cut = {(e, t) for e, t, n in traj.steps.select("episode_id", "t", "tokens_out").iter_rows()
               if n >= max_new_tokens}
    turns = episode_turns(traj.steps)
    out: list[Example] = []
    whole = per_step = 0
    for ep_id, task_id in traj.episodes.sort("episode_id").select("episode_id", "task_id").iter_rows():
        ts = turns.get(ep_id, [])
        if not ts or ep_id not in adv:
            continue
        a = adv[ep_id]
        task = tasks[task_id]
        pair = episode_example_ids(task.instruction, ts, tok, prompt)
        if pair is not None:
            ids, mask = pair
            step_of = _step_of_tokens(mask)
            mask = _unmark_cut_ends(mask, step_of, {t for e, t in cut if e == ep_id})
            out.append(_with_advantages(ids, mask, step_of, a))
            whole += 1
            continue
        per_step += 1
        for t, turn in enumerate(ts):
            ctx = Context(episode_id=ep_id, task=task, t=t, observation=turn.observation, history=ts[:t])
            p, act = render_compact_ids(ctx, tok, prompt), action_ids(tok, turn.action)
            mask = [False] * len(p) + [True] * len(act)
            if (ep_id, t) in cut:
                mask[-1] = False
            out.append(_with_advantages(p + act, mask, [t if m else -1 for m in mask], a))
    return out, SequenceStats(traj.episodes.height, whole, per_step, sum(len(e) for e in out))


def _step_of_tokens(mask: Sequence[bool]) -> list[int]:
    """The step index of each action token (runs of True are the steps' actions), -1 elsewhere."""
    out, t, prev = [], -1, False
    for m in mask:
        if m and not prev:
            t += 1
        out.append(t if m else -1)
        prev = m
    return out


def _unmark_cut_ends(mask: Sequence[bool], step_of: Sequence[int], cut_steps: set[int]) -> list[bool]:
    """`mask` without the last target token (the end marker) of each step in `cut_steps`."""
    out = list(mask)
    for i in range(len(out)):
        last_of_run = out[i] and (i + 1 == len(out) or not mask[i + 1])
        if last_of_run and step_of[i] in cut_steps:
            out[i] = False
    return out


def _with_advantages(ids: Sequence[int], mask: Sequence[bool], step_of: Sequence[int], a: Mapping[str, Any]) -> Example:
    boundary = int(a["proposal_step"])
    ax, asc = float(a["adv_exec"]), float(a["adv_schema"])
    prefix = [1.0 if m and 0 <= s <= boundary else 0.0 for m, s in zip(mask, step_of, strict=True)]
    return Example([int(i) for i in ids], [int(i) if m else IGNORE_INDEX for i, m in zip(ids, mask, strict=True)],
                   {"adv_exec": [ax if m else 0.0 for m in mask], "adv_schema": [asc if m else 0.0 for m in mask],
                    "prefix": prefix})


def with_old_logprobs(examples: Sequence[Example], old: Sequence[Sequence[float]],
                      ref: Sequence[Sequence[float]] | None) -> list[Example]:
    out = []
    for i, e in enumerate(examples):
        extras = {**e.extras, "old_logp": list(old[i])}
        if ref is not None:
            extras["ref_logp"] = list(ref[i])
        out.append(Example(e.input_ids, e.labels, extras))
    return out


def sql_rl_loss_fn(cfg: SqlRLConfig) -> Callable[[Any, Batch], tuple[torch.Tensor, dict[str, float]]]:
    """`dual_track_loss` on per-token advantages (w_s = 0 for `grpo`), + kl_coef x low_var_kl."""
    weight = cfg.schema_weight if cfg.method == "dual" else 0.0

    def loss_fn(model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logp, al = tempered_logprobs(model, batch, cfg.temperature)

        def tok(name: str) -> torch.Tensor:
            return batch.extras[name][:, 1:][al.rows, al.cols]

        mask = torch.ones_like(logp, dtype=torch.bool)[None]
        out = dual_track_loss(logp[None], tok("old_logp")[None], tok("adv_exec")[None], tok("adv_schema")[None],
                              mask, (tok("prefix") > 0)[None], schema_weight=weight, clip_low=cfg.clip_low,
                              clip_high=cfg.clip_high)
        loss, parts = out.loss, dict(out.parts)
        if cfg.kl_coef > 0:
            kl = masked_token_mean(low_var_kl(logp[None], tok("ref_logp")[None]), mask)
            loss = loss + cfg.kl_coef * kl
            parts["kl"] = float(kl.detach())
        return loss, parts

    return loss_fn


# ---------------------------------------------------------------------------------------
# Rollouts and evaluation
# ---------------------------------------------------------------------------------------


def learning_slice(tasks: Sequence[Task], n: int, iteration: int) -> list[Task]:
    """`n` tasks, a different (wrapping) slice each iteration, spread over the pool."""
    ts = sorted(tasks, key=lambda t: t.task_id)
    stride = max(1, len(ts) // n)
    start = iteration % stride
    picked = ts[start::stride]
    return picked[:n]


def rollout(model: Any, tok: Any, tasks: Sequence[Task], *, k: int, temperature: float, seed: int, iteration: int,
            batch_size: int, prompt: PromptConfig, max_new_tokens: int, env_kwargs: Mapping[str, Any], label: str,
            max_steps: int | None = None) -> Trajectories:
    """K episodes of every task with the in-memory model (greedy at temperature 0)."""
    rcfg = RolloutConfig(k=k, seed=seed, iteration=iteration, batch_size=batch_size, max_steps=max_steps,
                         env_kwargs=dict(env_kwargs))
    jobs = [EpisodeJob(task=t, sample=s, seed=episode_seed(rcfg.seed, t.task_id, s),
                       episode_id=f"{t.task_id}:{label}:i{iteration}:k{s}", group=f"{t.task_id}:i{iteration}")
            for t in tasks for s in range(k)]
    policy = policy_from_model(model, tok, label, prompt=prompt, temperature=temperature if temperature > 0 else 1.0,
                               max_new_tokens=max_new_tokens)
    if temperature <= 0:
        policy.sampling = replace(policy.sampling, temperature=0.0)
    return run_batch(policy, jobs, rcfg)


def accuracy(outcomes: pl.DataFrame) -> float:
    return float(outcomes["correct"].mean()) if outcomes.height else 0.0


@dataclass
class SqlRLIteration:
    iteration: int
    validation_accuracy: float          # greedy, after this iteration's update
    rollout_accuracy: float             # the iteration's sampled groups
    rollout_exec_reward: float
    rollout_schema_reward: float
    proposal_rate: float
    explore_calls: float                # per episode
    n_sequences: int
    nonzero_advantage: float            # share of episodes with a non-zero advantage on either track
    trained: bool
    seconds: float
    messages: list[str] = field(default_factory=list)


def run_sql_rl(cfg: SqlRLConfig, track: SqlTrackConfig, learn: Sequence[Task], validation: Sequence[Task],
               run_dir: str | Path, log: Callable[[dict[str, float], int], None] | None = None,
               ) -> tuple[Any, Any, float, list[SqlRLIteration]]:
    """The whole loop; returns (model, tokenizer, validation accuracy before, iterations)."""
    import time

    from distillery.lm.model import load_model_dir, save_model_dir
    from distillery.train.card import card_prompt

    if not learn:
        raise ValueError("sql_rl: no learning tasks")
    run_dir = Path(run_dir)
    prompt = PromptConfig(**card_prompt(cfg.model_dir))
    ref = load_model_dir(cfg.model_dir)
    ref.model.eval()
    tok = ref.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    env_kwargs = track.env_kwargs()
    by_id = {t.task_id: t for t in [*learn, *validation]}
    val = list(validation)

    def validate(model: Any) -> float:
        if not val:
            return math.nan
        tr = rollout(model, tok, val, k=1, temperature=0.0, seed=cfg.seed, iteration=0, batch_size=cfg.batch_size,
                     prompt=prompt, max_new_tokens=cfg.max_new_tokens, env_kwargs=env_kwargs, label="sql-val",
                     max_steps=cfg.max_steps)
        return accuracy(sql_outcomes(by_id, tr, env_kwargs))

    start_file = run_dir / "before.json"
    if start_file.is_file():
        before = json.loads(start_file.read_text())["validation_accuracy"]
    else:
        before = validate(ref.model)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(json.dumps({"validation_accuracy": before}), start_file)
    if log is not None:
        log({"validation_accuracy": before}, -1)
    model = load_model_dir(cfg.model_dir).model
    results: list[SqlRLIteration] = []
    for it in range(cfg.iterations):
        done = run_dir / f"iter-{it}"
        if (done / "result.json").is_file():
            results.append(SqlRLIteration(**json.loads((done / "result.json").read_text())))
            model = load_model_dir(done / "model").model
            continue
        t0 = time.perf_counter()
        tasks = learning_slice(learn, cfg.tasks_per_iteration, it)
        model.eval()
        traj = rollout(model, tok, tasks, k=cfg.k, temperature=cfg.temperature, seed=cfg.seed * 1000 + it,
                       iteration=it, batch_size=cfg.batch_size, prompt=prompt, max_new_tokens=cfg.max_new_tokens,
                       env_kwargs=env_kwargs, label=f"sql-rl-{cfg.method}", max_steps=cfg.max_steps)
        outcomes = sql_outcomes(by_id, traj, env_kwargs)
        adv = episode_advantages(outcomes, cfg)
        nonzero = float(((adv["adv_exec"] != 0) | (adv["adv_schema"] != 0)).mean()) if adv.height else 0.0
        examples, _ = rl_sequences(by_id, traj, adv, tok, prompt, cfg.max_new_tokens)
        messages: list[str] = []
        trained = bool(examples) and nonzero > 0
        if not trained:
            messages.append("no episode has a non-zero advantage (every group's rewards are equal): update skipped")
        else:
            old = score_examples(model, examples, temperature=cfg.temperature, pad_id=pad, batch_size=16)
            refs = (score_examples(ref.model, examples, temperature=cfg.temperature, pad_id=pad, batch_size=16)
                    if cfg.kl_coef > 0 else None)
            batch = with_old_logprobs(examples, old, refs)
            tcfg = replace(cfg.train, seed=cfg.seed * 1000 + it, epochs=float(cfg.epochs), max_steps=0,
                           dvclive=False, log_dir="", progress=False)
            model.train()
            train(model, batch, [], tcfg, done / "run", sql_rl_loss_fn(cfg), pad_id=pad)
            model.eval()
        r = episode_rewards(outcomes, cfg)
        res = SqlRLIteration(
            iteration=it, validation_accuracy=validate(model), rollout_accuracy=accuracy(outcomes),
            rollout_exec_reward=float(r["exec_track"].mean()), rollout_schema_reward=float(r["schema_reward"].mean()),
            proposal_rate=float((outcomes["proposal_step"] >= 0).mean()),
            explore_calls=float(outcomes["n_explore_calls"].mean()), n_sequences=len(examples),
            nonzero_advantage=nonzero, trained=trained, seconds=round(time.perf_counter() - t0, 1),
            messages=messages)
        save_model_dir(done / "model", model, tok, {"iteration": it, "config": asdict(cfg), "prompt": asdict(prompt)})
        tmp = done / "result.json.tmp"
        tmp.write_text(json.dumps(asdict(res), indent=1))
        tmp.replace(done / "result.json")
        shutil.rmtree(done / "run", ignore_errors=True)
        results.append(res)
        if log is not None:
            log({"validation_accuracy": res.validation_accuracy, "rollout_accuracy": res.rollout_accuracy,
                 "rollout_exec_reward": res.rollout_exec_reward, "proposal_rate": res.proposal_rate}, it)
    return model, tok, before, results

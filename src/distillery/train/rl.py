"""On-policy reinforcement learning on the deployed (held-out) user: GRPO, GiGPO and SIRI.

Each iteration k (reference/algorithms.md sections 1 and 2):

1. **Rollouts.** The current policy samples K episodes of each learning task (one group per
   task). Under SIRI, once enough plain successes exist (Phase 0), half of each group runs
   with the family's skill in the prompt and half without: the paired validation that
   updates the skill's utility U(k) (Phase 1).
2. **Rewards.** R = 1[success] - `invalid_penalty` x invalid actions (GiGPO's ALFWorld
   shaping: R = won, 0.1 per invalid action). As step rewards the penalty lands on the
   invalid step and 1[success] on the last step, so discounted returns favour shorter
   routes from the same state.
3. **Advantages.** GRPO: the episode's reward against its group, broadcast to every step.
   GiGPO: episode advantage plus omega x the step advantage over anchor-state groups
   (`train.advantages.gigpo_advantages`). SIRI: GiGPO's over the whole group, skill-guided
   and plain episodes alike.
4. **Update.** Every environment step is one training sample: the prompt the policy saw
   and its action (tool outputs are context, never targets). The loss is PPO-clip against
   the log-probs the policy had when it sampled (recomputed before the update, on the
   sampling temperature's distribution, as verl does), token-mean, plus `kl_coef` x
   `low_var_kl` to the frozen starting model, for `epochs` passes. SIRI adds
   lambda(k) x its internalization loss: the skill-guided actions with positive advantage
   and a skill of positive utility, re-scored under the *plain* prompt, weighted
   clip(A, 0, c) (`train.losses.siri_internalization_loss`). A group whose rewards are all
   equal gives zero advantage; an iteration with no non-zero advantage is skipped with
   its reason logged, never trained on.
5. **Evaluation.** Greedy success on the test tasks without any skill (what the weights
   hold), logged every iteration.

Every iteration is checkpointed (`<run>/iter-<k>/`: model, skills, result); a rerun skips
finished iterations and resumes an unfinished one from its training checkpoints, and the
rollouts of an iteration are seeded by (seed, k), so a resumed run equals an uninterrupted one.
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
from distillery.agents.prompts import PromptConfig, action_ids, render_compact_ids
from distillery.config import _f
from distillery.io import write_text
from distillery.rollout import EpisodeJob, RolloutConfig, Trajectories, episode_seed, run_batch
from distillery.train.advantages import gigpo_advantages, grpo_advantages
from distillery.train.config import OnPolicyConfig, TrainConfig
from distillery.train.data import Batch, Example, collate
from distillery.train.examples import episode_turns
from distillery.train.internalize import model_prompt, run_policy, success_rate
from distillery.train.loop import action_logits, train
from distillery.train.losses import (
    IGNORE_INDEX,
    linear_warmup,
    low_var_kl,
    masked_token_mean,
    ppo_clip_token_losses,
    siri_internalization_loss,
)
from distillery.types import Context, Experience, Task

NormMode = Literal["mean_norm", "mean_std_norm"]


@dataclass
class RLConfig(OnPolicyConfig):
    """`rl` stage: on-policy RL of the student on the held-out user's learning tasks."""

    section: ClassVar[str] = "rl"

    method: Literal["grpo", "gigpo", "siri"] = _f("gigpo", "grpo | gigpo | siri")
    model_dir: str = _f("models/warmup", "the policy to start from (and the frozen KL reference)")
    iterations: int = _f(6, "rollout -> advantages -> update cycles")
    tasks_per_family: int = _f(3, "learning tasks per family per iteration (a different slice each time)")
    k: int = _f(8, "episodes per task: one group (GiGPO's N)")
    temperature: float = _f(0.7, "sampling temperature; the loss scores the same tempered distribution")
    invalid_penalty: float = _f(0.1, "reward subtracted per invalid action (GiGPO's ALFWorld value)")
    gamma: float = _f(0.95, "GiGPO: discount of the step returns")
    step_weight: float = _f(1.0, "GiGPO: omega, weight of the step advantage")
    grpo_mode: NormMode = _f("mean_std_norm", "GRPO normalisation: mean_std_norm | mean_norm")
    gigpo_mode: NormMode = _f("mean_norm", "GiGPO normalisation (both levels): mean_norm | mean_std_norm")
    clip_low: float = _f(0.2, "PPO clip, lower bound")
    clip_high: float = _f(0.28, "PPO clip, upper bound (DAPO's decoupled value)")
    kl_coef: float = _f(0.01, "low_var_kl to the frozen starting model")
    epochs: int = _f(1, "update passes over each iteration's samples (verl's ppo_epochs)")
    # SIRI
    siri_lambda: float = _f(0.5, "SIRI: lambda_max, weight of the internalization loss")
    siri_warmup_iterations: int = _f(2, "SIRI: K_warm, lambda rises linearly over this many iterations")
    siri_weight_clip: float = _f(1.0, "SIRI: c in w = clip(A, 0, c)")
    siri_min_successes: int = _f(20, "SIRI Phase 0: plain successes needed before skills are used (N_req)")
    siri_mine_every: int = _f(3, "SIRI: mine new skills from plain successes every this many iterations")
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=2e-4, min_lr_ratio=1.0, warmup_steps=0, epochs=2.0, batch_size=32, weight_decay=0.0,
        save_every=20, keep_checkpoints=1), metadata={"help": "the optimiser of each update (epochs is set from `epochs`)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations < 1 or self.k < 2 or self.tasks_per_family < 1 or self.epochs < 1:
            raise ValueError("rl.iterations, rl.tasks_per_family and rl.epochs must be >= 1 and rl.k >= 2 "
                             "(a group of one has no baseline)")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"rl.gamma must be in [0, 1] (a discount), got {self.gamma}")
        if not 0 <= self.clip_low < 1 or self.clip_high < 0:
            raise ValueError(f"rl.clip_low must be in [0, 1) and rl.clip_high >= 0 (the ratio is clipped to "
                             f"[1 - clip_low, 1 + clip_high]), got {self.clip_low} and {self.clip_high}")
        if self.kl_coef < 0:
            raise ValueError(f"rl.kl_coef must be >= 0, got {self.kl_coef}")


# ---------------------------------------------------------------------------------------
# Rewards and advantages (pure)
# ---------------------------------------------------------------------------------------


def shaped_rewards(episodes: pl.DataFrame, steps: pl.DataFrame, invalid_penalty: float
                   ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Episode reward R = 1[success] - p x invalid actions, and step rewards summing to it:
    -p on each invalid step, +1[success] on the last step. Adds `reward` to both frames."""
    last = steps.group_by("episode_id").agg(pl.col("t").max().alias("_last"))
    st = (steps.drop("reward", strict=False)
          .join(last, on="episode_id", how="left")
          .join(episodes.select("episode_id", "success"), on="episode_id", how="left")
          .with_columns(reward=(pl.when(~pl.col("valid")).then(-invalid_penalty).otherwise(0.0)
                                + pl.when((pl.col("t") == pl.col("_last")) & pl.col("success")).then(1.0)
                                .otherwise(0.0)))
          .drop("_last", "success"))
    totals = st.group_by("episode_id").agg(pl.col("reward").sum().alias("reward"))
    eps = episodes.drop("reward", strict=False).join(totals, on="episode_id", how="left").with_columns(
        pl.col("reward").fill_null(pl.col("success").cast(pl.Float64)))
    return eps, st


def step_advantages(method: str, episodes: pl.DataFrame, steps: pl.DataFrame, cfg: RLConfig) -> pl.DataFrame:
    """One advantage per step (`episode_id`, `t`, `advantage`) for `method`; frames carry
    `reward` (see `shaped_rewards`) and episodes their `group`."""
    if method == "grpo":
        adv = grpo_advantages(episodes, reward="reward", mode=cfg.grpo_mode)
        return steps.select("episode_id", "t").join(adv.select("episode_id", "advantage"), on="episode_id")
    out = gigpo_advantages(episodes, steps, reward="reward", gamma=cfg.gamma, step_weight=cfg.step_weight,
                           mode=cfg.gigpo_mode)
    return out.select("episode_id", "t", "advantage")


# ---------------------------------------------------------------------------------------
# Samples: one per environment step
# ---------------------------------------------------------------------------------------


def step_examples(tasks: Mapping[str, Task], traj: Trajectories, advantages: pl.DataFrame, tok: Any,
                  prompt: PromptConfig, experience_text: Mapping[str, str],
                  ) -> tuple[list[Example], list[tuple[str, int]]]:
    """The prompt each step was acted on (with the experience it was shown) and its action,
    with `advantage` and `pg` = 1 (a policy-gradient sample). Returns the examples and the
    (episode_id, t) of each. Steps whose advantage is exactly 0 are kept: they still carry
    the KL term and count in the token mean, as in verl."""
    adv = {(e, t): a for e, t, a in advantages.select("episode_id", "t", "advantage").iter_rows()}
    turns = episode_turns(traj.steps)
    shown = {e: list(i) for e, i in traj.steps.filter(pl.col("t") == 0)
             .select("episode_id", "injected").iter_rows()}
    out, keys = [], []
    for ep_id, task_id in traj.episodes.sort("episode_id").select("episode_id", "task_id").iter_rows():
        ts = turns.get(ep_id, [])
        exp = [experience_text[i] for i in shown.get(ep_id, []) if i in experience_text]
        for t, turn in enumerate(ts):
            ctx = Context(episode_id=ep_id, task=tasks[task_id], t=t, observation=turn.observation,
                          history=ts[:t], experience=exp)
            p, a = render_compact_ids(ctx, tok, prompt), action_ids(tok, turn.action)
            out.append(Example(p + a, [IGNORE_INDEX] * len(p) + a,
                               {"advantage": float(adv.get((ep_id, t), 0.0)), "pg": 1.0}))
            keys.append((ep_id, t))
    return out, keys


def internalization_examples(tasks: Mapping[str, Task], traj: Trajectories, advantages: pl.DataFrame,
                             tok: Any, prompt: PromptConfig, skills: Mapping[str, Experience]) -> list[Example]:
    """SIRI's gated samples: steps of skill-guided episodes whose skill has U(k) > 0 and
    whose advantage is > 0, re-rendered under the plain prompt (the skill removed), with
    `pg` = 0. The gate's action-token condition is the label mask."""
    adv = {(e, t): a for e, t, a in advantages.select("episode_id", "t", "advantage").iter_rows()}
    turns = episode_turns(traj.steps)
    used = {e: list(i) for e, i in traj.steps.filter(pl.col("t") == 0).select("episode_id", "injected").iter_rows()}
    out = []
    for ep_id, task_id in traj.episodes.sort("episode_id").select("episode_id", "task_id").iter_rows():
        if not any(i in skills and skills[i].utility > 0 for i in used.get(ep_id, [])):
            continue
        ts = turns.get(ep_id, [])
        for t, turn in enumerate(ts):
            a_t = adv.get((ep_id, t), 0.0)
            if a_t <= 0:
                continue
            ctx = Context(episode_id=ep_id, task=tasks[task_id], t=t, observation=turn.observation, history=ts[:t])
            p, a = render_compact_ids(ctx, tok, prompt), action_ids(tok, turn.action)
            out.append(Example(p + a, [IGNORE_INDEX] * len(p) + a, {"advantage": float(a_t), "pg": 0.0}))
    return out


def tempered_logprobs(model: Any, batch: Batch, temperature: float) -> tuple[torch.Tensor, Any]:
    """Log-probs of the target tokens under softmax(logits / T), [N], and the positions."""
    al = action_logits(model, batch)
    logp = torch.log_softmax(al.logits.float() / temperature, -1).gather(-1, al.targets[:, None])[:, 0]
    return logp, al


@torch.no_grad()
def score_examples(model: Any, examples: Sequence[Example], *, temperature: float, pad_id: int,
                   batch_size: int = 64) -> list[list[float]]:
    """Per-token log-probs of each example's targets (0 elsewhere), aligned with input_ids."""
    was = model.training
    model.eval()
    out: list[list[float]] = [[0.0] * len(e) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        batch = collate([examples[i] for i in idx], pad_id).to(model.device)
        logp, al = tempered_logprobs(model, batch, temperature)
        for r, c, v in zip(al.rows.tolist(), al.cols.tolist(), logp.tolist(), strict=True):
            out[idx[r]][c + 1] = v
    if was:
        model.train()
    return out


def with_logprobs(examples: Sequence[Example], old: Sequence[Sequence[float]] | None,
                  ref: Sequence[Sequence[float]] | None) -> list[Example]:
    """`examples` with per-token `old_logp` and `ref_logp` extras (zeros where not given)."""
    out = []
    for i, e in enumerate(examples):
        zeros = [0.0] * len(e)
        out.append(Example(e.input_ids, e.labels, {**e.extras, "old_logp": list(old[i]) if old else zeros,
                                                   "ref_logp": list(ref[i]) if ref else zeros}))
    return out


def rl_loss_fn(cfg: RLConfig, siri_lambda: float) -> Callable[[Any, Batch], tuple[torch.Tensor, dict[str, float]]]:
    """PPO-clip + kl_coef x low_var_kl on `pg` samples, + lambda x SIRI's loss on the others."""

    def loss_fn(model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logp, al = tempered_logprobs(model, batch, cfg.temperature)
        old = batch.extras["old_logp"][:, 1:][al.rows, al.cols]
        ref = batch.extras["ref_logp"][:, 1:][al.rows, al.cols]
        adv = batch.extras["advantage"][al.rows]
        pg = batch.extras["pg"][al.rows] > 0
        lp, o, r, a = logp[None], old[None], ref[None], adv[None]
        pg_loss = masked_token_mean(ppo_clip_token_losses(lp, o, a, clip_low=cfg.clip_low, clip_high=cfg.clip_high),
                                    pg[None])
        kl = masked_token_mean(low_var_kl(lp, r), pg[None])
        loss = pg_loss + cfg.kl_coef * kl
        parts = {"pg_loss": float(pg_loss.detach()), "kl": float(kl.detach())}
        if siri_lambda > 0 and bool((~pg).any()):
            one = torch.ones(1)
            internal = siri_internalization_loss(lp, ~pg[None], one, one, a, weight_clip=cfg.siri_weight_clip)
            loss = loss + siri_lambda * internal
            parts["internalization"] = float(internal.detach())
        return loss, parts

    return loss_fn


def skip_reason(steps: pl.DataFrame, examples: Sequence[Example], internal: Sequence[Example]) -> str | None:
    """Why an iteration's batch must not be trained on, or None. A batch without a single
    valid action, or whose every advantage is 0 (all groups' rewards equal), has nothing
    to reinforce: an update would only follow the KL term's noise."""
    if steps.height == 0 or not bool(steps["valid"].any()):
        return "no valid action in the whole batch: nothing to reinforce, update skipped"
    if not internal and all(e.extras["advantage"] == 0.0 for e in examples):
        return "no sample has a non-zero advantage (every group's rewards are equal): update skipped"
    return None


# ---------------------------------------------------------------------------------------
# SIRI's skill bank
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeSkillInjector:
    """Shows episode e's skill (if it has one) at every step of e (an `Injector`)."""

    by_episode: Mapping[str, Experience]

    def __call__(self, ctx: Context) -> tuple[list[str], list[str]]:
        from distillery.mining.skills import skill_prompt_text

        s = self.by_episode.get(ctx.episode_id)
        return ([s.exp_id], [skill_prompt_text(s)]) if s is not None else ([], [])


def usable_skill(skills: Sequence[Experience], family: str) -> Experience | None:
    """The family's best non-retired skill (highest utility, then most evidence)."""
    cands = [s for s in skills if s.family == family and s.status != "retired"]
    return max(cands, key=lambda s: (s.utility, s.counter, s.exp_id)) if cands else None


def update_skills(skills: Sequence[Experience], episodes: pl.DataFrame) -> tuple[list[Experience], list[str]]:
    """SIRI's paired validation on this iteration's groups: for each group run half with a
    skill and half without, delta_g = mean R(skill) - mean R(plain) updates U(k)."""
    from distillery.mining.skills import record_trial, update_status

    by_id = {s.exp_id: s for s in skills}
    msgs = []
    eps = episodes.with_columns(skill=pl.col("injected").list.first())
    for _, g in eps.group_by("group", maintain_order=True):
        used = [s for s in g["skill"].drop_nulls().unique().to_list() if s in by_id]
        plain = g.filter(pl.col("skill").is_null())
        if len(used) != 1 or plain.height == 0:
            continue
        sk = by_id[used[0]]
        delta = float(g.filter(pl.col("skill") == sk.exp_id)["reward"].mean()) - float(plain["reward"].mean())
        before = sk.status
        by_id[sk.exp_id] = update_status(record_trial(sk, delta))
        if by_id[sk.exp_id].status != before:
            msgs.append(f"skill {sk.exp_id}: {before} -> {by_id[sk.exp_id].status} (U={by_id[sk.exp_id].utility:+.3f})")
    return [by_id[s.exp_id] for s in skills], msgs


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


@dataclass
class RLIteration:
    iteration: int
    test_success: float            # greedy, no skill: what the weights hold
    rollout_success: float         # the iteration's sampled groups
    rollout_reward: float
    n_samples: int
    n_internalization: int
    nonzero_advantage: float       # share of samples with a non-zero advantage
    skills_active: int
    trained: bool
    messages: list[str] = field(default_factory=list)


def learning_slice(tasks: Sequence[Task], per_family: int, iteration: int) -> list[Task]:
    """`per_family` tasks of each family, a different slice each iteration (wrapping)."""
    fams: dict[str, list[Task]] = {}
    for t in sorted(tasks, key=lambda t: t.task_id):
        fams.setdefault(t.family, []).append(t)
    out = []
    for fam in sorted(fams):
        ts = fams[fam]
        start = (iteration * per_family) % len(ts)
        out.extend((ts + ts)[start: start + min(per_family, len(ts))])
    return out


def _rollout(model: Any, tok: Any, tasks: Sequence[Task], skills: Sequence[Experience], cfg: RLConfig,
             it: int, prompt: PromptConfig, use_skills: bool) -> Trajectories:
    rcfg = RolloutConfig(k=cfg.k, seed=cfg.seed * 1000 + it, iteration=it, batch_size=cfg.batch_size)
    jobs, guided = [], {}
    for task in tasks:
        sk = usable_skill(skills, task.family) if use_skills else None
        for s in range(cfg.k):
            ep = f"{task.task_id}:rl:i{it}:k{s}"
            jobs.append(EpisodeJob(task=task, sample=s, seed=episode_seed(rcfg.seed, task.task_id, s),
                                   episode_id=ep, group=f"{task.task_id}:i{it}"))
            if sk is not None and s < cfg.k // 2:
                guided[ep] = sk
    policy = policy_from_model(model, tok, f"rl-{cfg.method}", prompt=prompt, temperature=cfg.temperature,
                               max_new_tokens=cfg.max_new_tokens)
    return run_batch(policy, jobs, rcfg, EpisodeSkillInjector(guided) if guided else None)


def run_rl(cfg: RLConfig, tasks: Sequence[Task], skills: Sequence[Experience], run_dir: str | Path,
           log: Callable[[dict[str, float], int], None] | None = None,
           ) -> tuple[Any, Any, list[Experience], float, list[RLIteration]]:
    """The whole loop; returns (model, tokenizer, final skills, test success before, results)."""
    from distillery.lm.model import load_model_dir, save_model_dir
    from distillery.mining.skills import mine_skills, skill_prompt_text

    run_dir = Path(run_dir)
    learn = [t for t in tasks if t.split == cfg.learn_split]
    test = [t for t in tasks if t.split == cfg.test_split]
    if not learn or not test:
        raise ValueError(f"rl: no {cfg.learn_split!r} or {cfg.test_split!r} tasks; set tasks.heldout_profiles "
                         "so the tasks stage generates them")
    by_id = {t.task_id: t for t in tasks}
    prompt = model_prompt(cfg.model_dir)
    ref = load_model_dir(cfg.model_dir)
    ref.model.eval()
    model, tok = ref.model, ref.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    start_file = run_dir / "before.json"
    if start_file.is_file():
        before = json.loads(start_file.read_text())["test_success"]
    else:
        before = _greedy(model, tok, test, cfg, prompt)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(json.dumps({"test_success": before}), start_file)
    if log is not None:
        log({"test_success": before}, -1)              # step 0: the starting model
    model = load_model_dir(cfg.model_dir).model       # the trained copy; `ref` stays frozen
    skills = list(skills) if cfg.method == "siri" else []
    plain_successes = 0
    results: list[RLIteration] = []
    for it in range(cfg.iterations):
        done = run_dir / f"iter-{it}"
        if (done / "result.json").is_file():
            body = json.loads((done / "result.json").read_text())
            results.append(RLIteration(**body["result"]))
            skills = [Experience.from_dict(d) for d in body["skills"]]
            plain_successes = body["plain_successes"]
            model = load_model_dir(done / "model").model
            continue
        messages: list[str] = []
        use_skills = cfg.method == "siri" and plain_successes >= cfg.siri_min_successes
        successes_before = plain_successes
        learn_slice = learning_slice(learn, cfg.tasks_per_family, it)
        traj = _rollout(model, tok, learn_slice, skills, cfg, it, prompt, use_skills)
        eps, steps = shaped_rewards(traj.episodes, traj.steps, cfg.invalid_penalty)
        traj = Trajectories(eps, steps)
        plain_eps = eps.filter(pl.col("injected").list.len() == 0)
        plain_successes += int(plain_eps["success"].sum())
        adv = step_advantages("gigpo" if cfg.method == "siri" else cfg.method, eps, steps, cfg)
        texts = {s.exp_id: skill_prompt_text(s) for s in skills}
        examples, _ = step_examples(by_id, traj, adv, tok, prompt, texts)
        internal: list[Example] = []
        lam = 0.0
        if cfg.method == "siri":
            if use_skills:
                skills, msgs = update_skills(skills, eps)
                messages += msgs
                internal = internalization_examples(by_id, traj, adv, tok, prompt, {s.exp_id: s for s in skills})
                lam = linear_warmup(it + 1, warmup_steps=cfg.siri_warmup_iterations, max_value=cfg.siri_lambda)
            else:
                messages.append(f"SIRI phase 0: {successes_before} plain successes before this iteration "
                                f"< {cfg.siri_min_successes}; no skill shown")
            if cfg.siri_mine_every and (it + 1) % cfg.siri_mine_every == 0 and plain_eps.height:
                known = {s.exp_id for s in skills}
                fresh = [s for s in mine_skills([by_id[t.task_id] for t in learn_slice], plain_eps, steps)
                         if s.exp_id not in known]
                skills += fresh
                messages.append(f"mined {len(fresh)} new skill(s) from {int(plain_eps['success'].sum())} plain successes")
        nonzero = sum(1 for e in examples if e.extras["advantage"] != 0.0)
        skip = skip_reason(steps, examples, internal)
        trained = skip is None
        if skip is not None:
            messages.append(skip)
        else:
            old = score_examples(model, examples, temperature=cfg.temperature, pad_id=pad)
            refs = score_examples(ref.model, examples, temperature=cfg.temperature, pad_id=pad)
            batch = with_logprobs(examples, old, refs) + with_logprobs(internal, None, None)
            tcfg = replace(cfg.train, seed=cfg.seed * 1000 + it, epochs=float(cfg.epochs), max_steps=0,
                           dvclive=False, log_dir="", progress=False)
            model.train()
            train(model, batch, [], tcfg, done / "run", rl_loss_fn(cfg, lam), pad_id=pad)
            model.eval()
        res = RLIteration(
            iteration=it, test_success=_greedy(model, tok, test, cfg, prompt),
            rollout_success=success_rate(traj), rollout_reward=float(eps["reward"].mean()),
            n_samples=len(examples), n_internalization=len(internal),
            nonzero_advantage=nonzero / max(len(examples), 1),
            skills_active=sum(1 for s in skills if s.status == "active"), trained=trained, messages=messages)
        save_model_dir(done / "model", model, tok, {"iteration": it, "config": asdict(cfg)})
        tmp = done / "result.json.tmp"
        tmp.write_text(json.dumps({"result": asdict(res), "skills": [s.to_dict() for s in skills],
                                   "plain_successes": plain_successes}, indent=1))
        tmp.replace(done / "result.json")
        shutil.rmtree(done / "run", ignore_errors=True)
        results.append(res)
        if log is not None:
            log({"test_success": res.test_success, "rollout_success": res.rollout_success,
                 "rollout_reward": res.rollout_reward, "nonzero_advantage": res.nonzero_advantage}, it)
    return model, tok, skills, before, results


def _greedy(model: Any, tok: Any, test: Sequence[Task], cfg: RLConfig, prompt: PromptConfig) -> float:
    traj = run_policy(model, tok, test, injector=None, k=1, temperature=0.0, seed=cfg.seed, iteration=0,
                      batch_size=cfg.batch_size, label="rl-eval", prompt=prompt, max_new_tokens=cfg.max_new_tokens)
    rate = success_rate(traj)
    return rate if math.isfinite(rate) else 0.0

"""Experience internalization by context distillation (reference/algorithms.md 5a).

A student meets a held-out user. Each iteration k:

1. **Teacher rollouts.** The teacher is the *same* model M_k with the experience pool
   injected (globally, or step-wise: the top items for each observation, for that call
   only). It samples K episodes of every learning task (`heldout_train`).
2. **Experience update.** The pool is updated from those rollouts (ExpeL-style ops for
   principles, `mining.principles.update_pool`; successful decisive calls for instances).
3. **Distillation** into M_{k+1}, which never sees the experience:
   - *off-policy*: the teacher's successful episodes, rendered **without** experience,
     trained by likelihood on the action tokens (tool outputs are context, not targets);
   - *on-policy*: the student samples without experience; the teacher scores the same
     prefixes with the experience in its prompt; per-token reverse KL as an advantage
     (`train.losses.opd_loss`, reference 4b).
   Both mix in replayed warm-up episodes with their principles in the prompt, so the
   student keeps following principle text when it is given (the forgetting check).
4. **Evaluation** on `heldout_test`: success without experience (what was internalized)
   and with it (what the teacher can do), logged per iteration through DVCLive.

Every iteration is checkpointed (`<run>/iter-<k>/`: model, pool, metrics); a rerun skips
finished iterations and resumes an unfinished one from its training checkpoints.
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
from distillery.rollout import Injector, RolloutConfig, Trajectories, make_jobs, run_batch
from distillery.train.card import card_prompt
from distillery.train.config import OnPolicyConfig, TrainConfig
from distillery.train.data import Batch, Example
from distillery.train.examples import episode_turns, sft_examples
from distillery.train.loop import action_logits, train
from distillery.train.losses import opd_loss
from distillery.train.warmup import principle_experience
from distillery.types import Context, Experience, Task


@dataclass
class InternalizeConfig(OnPolicyConfig):
    """`internalize` stage: N iterations of rollout -> experience update -> distil -> evaluate."""

    section: ClassVar[str] = "internalize"

    model_dir: str = _f("models/warmup", "the model to start from (the warm-up student)")
    tasks_per_family: int = _f(10, "learning tasks per family, the same first N every iteration (0 = all)")
    iterations: int = _f(3, "rollout -> update -> distil -> evaluate cycles")
    granularity: Literal["principle", "instance"] = _f(
        "principle", "principle | instance: which experience is injected and distilled")
    injection: Literal["stepwise", "global"] = _f(
        "stepwise", "stepwise (top items per step, that call only) | global (whole pool)")
    regime: Literal["off_policy", "on_policy"] = _f(
        "off_policy", "off_policy (likelihood on teacher successes) | on_policy (reverse KL)")
    top_k: int = _f(3, "step-wise injection: items per step")
    scope_family: bool = _f(True, "step-wise injection: offer only the task family's items and the general ones")
    lessons_only: bool = _f(True, "principle updates: keep only regularities a failure contrasted (lessons)")
    # Step-wise selectors that need no endpoint.
    selector: Literal["tfidf", "embedding"] = _f(
        "tfidf", "step-wise injection: what ranks the items against the step, tfidf (shared words) | "
        "embedding (all-MiniLM-L6-v2 cosine, offline)")
    replay_episodes: int = _f(400, "warm-up teacher episodes replayed with their principles shown")
    max_rules: int = _f(20, "principle pool cap (ExpeL max_num_rules)")
    eval_seeds: list[int] = _f([0, 1, 2], "sampling seeds of the teacher-vs-plain comparison before training")
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=1e-3, warmup_steps=10, max_steps=120, batch_size=16, weight_decay=0.0, save_every=40,
        keep_checkpoints=1), metadata={"help": "the training loop of each distillation step"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations < 1 or self.top_k < 1 or self.tasks_per_family < 0:
            raise ValueError("internalize.iterations and top_k must be at least 1, tasks_per_family >= 0 (0 = all)")
        if not self.eval_seeds:
            raise ValueError(f"{self.section}.eval_seeds must list at least one seed (the teacher-vs-plain "
                             "comparison averages over them)")


# ---------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------


def make_injector(pool: Sequence[Experience], injection: str, top_k: int,
                  selector: str = "tfidf", scope_family: bool = False) -> Injector | None:
    """The injector for `pool` (None when nothing is active: the prompt then has no experience);
    step-wise, `selector` (`mining.inject.make_selector`) ranks the items at each step."""
    from distillery.mining.inject import (
        GlobalInjector,
        StepwiseInjector,
        active_items,
        make_selector,
    )

    if not active_items(pool):
        return None
    if injection == "global":
        return GlobalInjector(pool)
    return StepwiseInjector(pool, make_selector(selector), k=top_k, scope_family=scope_family)


def principles_injector(ctx: Context) -> tuple[list[str], list[str]]:
    """The task's own governing principles (the user's preferences), as experience: the
    'principles given in the prompt' condition of the forgetting check."""
    return [f"pref:{i}" for i in range(len(ctx.task.preferences))], list(ctx.task.preferences)


def run_policy(model: Any, tok: Any, tasks: Sequence[Task], *, injector: Injector | None, k: int,
               temperature: float, seed: int, iteration: int, batch_size: int, label: str,
               prompt: PromptConfig, max_new_tokens: int = 96) -> Trajectories:
    """Roll `model` out on `tasks` (K each) with an optional injector; greedy at temperature 0."""
    policy = policy_from_model(model, tok, label, prompt=prompt, temperature=temperature,
                               max_new_tokens=max_new_tokens)
    cfg = RolloutConfig(k=k, seed=seed, iteration=iteration, batch_size=batch_size)
    return run_batch(policy, make_jobs(tasks, label, cfg), cfg, injector)


def success_rate(traj: Trajectories) -> float:
    return float(traj.episodes["success"].mean()) if traj.episodes.height else float("nan")


def update_experience(pool: Sequence[Experience], granularity: str, tasks: Mapping[str, Task],
                      traj: Trajectories, max_rules: int,
                      lessons_only: bool = False) -> tuple[list[Experience], list[str]]:
    """The pool after learning from `traj` (never lost: failures keep the old pool)."""
    if granularity == "principle":
        from distillery.mining.principles import update_pool
        from distillery.mining.rules import RulesSummariser

        up = update_pool(pool, tasks, traj.episodes, traj.steps, RulesSummariser(lessons_only=lessons_only),
                         max_rules=max_rules)
        return up.pool, up.messages
    from distillery.mining.instances import mine_instances

    fresh = mine_instances(tasks, traj.episodes, traj.steps)
    if not fresh:
        return list(pool), ["no successful episode: instance pool unchanged"]
    merged = {e.exp_id: e for e in pool}
    for e in fresh:
        merged.setdefault(e.exp_id, e)
    return list(merged.values()), [f"instances: {len(pool)} -> {len(merged)}"]


def replay_examples(tasks: Mapping[str, Task], episodes: pl.DataFrame, steps: pl.DataFrame, tok: Any,
                    prompt: PromptConfig, n: int, seed: int) -> list[Example]:
    """`n` warm-up teacher episodes with their principles shown (sampled by a seeded hash)."""
    if n <= 0 or episodes.height == 0:
        return []
    eps = episodes.filter(pl.col("success") & pl.col("task_id").is_in(list(tasks)))
    eps = eps.with_columns(pl.col("episode_id").hash(seed).alias("_h")).sort("_h").head(n).drop("_h")
    steps = steps.join(eps.select("episode_id"), on="episode_id", how="semi")
    shown = principle_experience(eps, tasks, 1.0, seed)
    ex, _ = sft_examples(tasks, eps, steps, tok, prompt, True, experience=shown)
    return ex


def onpolicy_examples(model: Any, tok: Any, tasks: Mapping[str, Task], traj: Trajectories,
                      injector: Injector | None, prompt: PromptConfig) -> list[Example]:
    """One example per student step: the plain prompt and the sampled action, with per-token
    `sampler_logp` (the student, as it sampled: same weights) and `teacher_logp` (the same
    model with the experience the injector picks for that step in its prompt)."""
    turns = episode_turns(traj.steps)
    out: list[Example] = []
    model.eval()
    for ep_id, task_id in traj.episodes.select("episode_id", "task_id").iter_rows():
        task = tasks[task_id]
        ts = turns.get(ep_id, [])
        for t, turn in enumerate(ts):
            ctx = Context(episode_id=ep_id, task=task, t=t, observation=turn.observation, history=ts[:t])
            act = action_ids(tok, turn.action)
            plain = render_compact_ids(ctx, tok, prompt)
            taught = plain
            if injector is not None:
                ids, texts = injector(ctx)
                taught = render_compact_ids(replace(ctx, experience=texts, experience_ids=ids), tok, prompt)
            s_lp = _action_logprobs(model, plain, act)
            t_lp = _action_logprobs(model, taught, act)
            pad = [0.0] * len(plain)
            out.append(Example(plain + act, [-100] * len(plain) + act,
                               {"sampler_logp": pad + s_lp, "teacher_logp": pad + t_lp}))
    return out


@torch.no_grad()
def _action_logprobs(model: Any, prompt: list[int], act: list[int]) -> list[float]:
    ids = torch.tensor([prompt + act], device=model.device)
    logp = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1:-1].float(), -1)
    return logp.gather(-1, torch.tensor(act, device=model.device)[:, None])[:, 0].tolist()


def onpolicy_loss_fn(model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """OPD on the action tokens; replayed examples (no teacher) fall back to likelihood."""
    al = action_logits(model, batch)
    logp = torch.log_softmax(al.logits.float(), -1).gather(-1, al.targets[:, None])[:, 0]
    s = batch.extras["sampler_logp"][:, 1:][al.rows, al.cols]
    t = batch.extras["teacher_logp"][:, 1:][al.rows, al.cols]
    has_teacher = batch.extras["has_teacher"][al.rows] > 0
    mask = torch.ones_like(logp, dtype=torch.bool)
    zero = logp.new_zeros(())
    distil = opd_loss(logp[None], s[None], t[None], (mask & has_teacher)[None]).loss if has_teacher.any() else zero
    nll = -(logp[~has_teacher]).mean() if (~has_teacher).any() else zero
    return distil + nll, {"reverse_kl": float((s - t)[has_teacher].mean()) if has_teacher.any() else 0.0}


def _with_flags(examples: Sequence[Example], teacher: bool) -> list[Example]:
    out = []
    for e in examples:
        zeros = [0.0] * len(e)
        extras = {"sampler_logp": e.extras.get("sampler_logp", zeros),
                  "teacher_logp": e.extras.get("teacher_logp", zeros), "has_teacher": 1.0 if teacher else 0.0}
        out.append(Example(e.input_ids, e.labels, extras))
    return out


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


@dataclass
class IterationResult:
    iteration: int
    success_plain: float          # heldout_test, no experience in the prompt (internalized)
    success_with_experience: float  # heldout_test, the pool injected (the teacher)
    teacher_rollout_success: float  # learning tasks, sampled, with the pool
    pool_size: int
    n_examples: int
    messages: list[str] = field(default_factory=list)


def model_prompt(model_dir: str | Path) -> PromptConfig:
    """The prompt format a model was trained with (its card), else the default."""
    return PromptConfig(**card_prompt(model_dir))


def _load(model_dir: Path) -> tuple[Any, Any]:
    from distillery.lm.model import load_model_dir

    lm = load_model_dir(model_dir)
    return lm.model, lm.tokenizer


def run_internalize(
    cfg: InternalizeConfig,
    tasks: Sequence[Task],
    pool: Sequence[Experience],
    replay: tuple[pl.DataFrame, pl.DataFrame] | None,
    run_dir: str | Path,
    log: Callable[[dict[str, float], int], None] | None = None,
) -> tuple[Any, Any, list[Experience], list[IterationResult]]:
    """The whole loop; returns (model, tokenizer, final pool, one result per iteration)."""
    from distillery.lm.model import save_model_dir

    run_dir = Path(run_dir)
    learn = [t for t in tasks if t.split == cfg.learn_split]
    test = [t for t in tasks if t.split == cfg.test_split]
    if not learn or not test:
        raise ValueError(f"internalize: no {cfg.learn_split!r} or {cfg.test_split!r} tasks; set "
                         "tasks.heldout_profiles so the tasks stage generates them")
    if cfg.tasks_per_family:
        kept: dict[str, list[Task]] = {}
        for t in learn:
            kept.setdefault(t.family, []).append(t)
        learn = [t for fam in kept.values() for t in fam[: cfg.tasks_per_family]]
    by_id = {t.task_id: t for t in tasks}
    model, tok = _load(Path(cfg.model_dir))
    prompt = model_prompt(cfg.model_dir)
    pool = list(pool)
    results: list[IterationResult] = []
    for it in range(cfg.iterations):
        done = run_dir / f"iter-{it}"
        if (done / "result.json").is_file():             # finished earlier: resume after it
            body = json.loads((done / "result.json").read_text())
            results.append(IterationResult(**body["result"]))
            pool = [Experience.from_dict(d) for d in body["pool"]]
            model, tok = _load(done / "model")
            continue
        injector = make_injector(pool, cfg.injection, cfg.top_k, cfg.selector, cfg.scope_family)
        seed = cfg.seed * 1000 + it
        teach = run_policy(model, tok, learn, injector=injector, k=cfg.k, temperature=cfg.temperature,
                           seed=seed, iteration=it, batch_size=cfg.batch_size, label=f"teacher-i{it}", prompt=prompt,
                           max_new_tokens=cfg.max_new_tokens)
        pool, messages = update_experience(pool, cfg.granularity, by_id, teach, cfg.max_rules, cfg.lessons_only)
        injector = make_injector(pool, cfg.injection, cfg.top_k, cfg.selector, cfg.scope_family)
        rep = []
        if replay is not None:
            train_tasks = {t.task_id: t for t in tasks if t.split == "train"}
            rep = replay_examples(train_tasks, replay[0], replay[1], tok, prompt, cfg.replay_episodes, cfg.seed)
        if cfg.regime == "off_policy":
            distil, _ = sft_examples(by_id, teach.episodes, teach.steps, tok, prompt, only_success=True)
            examples = distil + rep
            loss_fn = None
        else:
            student = run_policy(model, tok, learn, injector=None, k=cfg.k, temperature=cfg.temperature,
                                 seed=seed + 500, iteration=it, batch_size=cfg.batch_size, label=f"student-i{it}",
                                 prompt=prompt, max_new_tokens=cfg.max_new_tokens)
            distil = onpolicy_examples(model, tok, by_id, student, injector, prompt)
            examples = _with_flags(distil, True) + _with_flags(rep, False)
            loss_fn = onpolicy_loss_fn
        if not distil:
            messages.append("nothing to distil this iteration (no successful teacher episode / no step)")
        tcfg = replace(cfg.train, seed=seed, dvclive=False, log_dir="")
        if examples:
            model.train()
            train(model, examples, [], tcfg, done / "run", loss_fn, pad_id=tok.pad_token_id)
        model.eval()
        plain = run_policy(model, tok, test, injector=None, k=1, temperature=0.0, seed=cfg.seed,
                           iteration=it, batch_size=cfg.batch_size, label=f"student-i{it}", prompt=prompt,
                           max_new_tokens=cfg.max_new_tokens)
        taught = run_policy(model, tok, test, injector=injector, k=1, temperature=0.0, seed=cfg.seed,
                            iteration=it, batch_size=cfg.batch_size, label=f"teacher-i{it}", prompt=prompt,
                            max_new_tokens=cfg.max_new_tokens)
        res = IterationResult(it, success_rate(plain), success_rate(taught), success_rate(teach), len(pool),
                              len(distil), messages)
        save_model_dir(done / "model", model, tok, {"iteration": it, "config": asdict(cfg)})
        tmp = done / "result.json.tmp"
        tmp.write_text(json.dumps({"result": asdict(res), "pool": [e.to_dict() for e in pool]}, indent=1))
        tmp.replace(done / "result.json")
        shutil.rmtree(done / "run", ignore_errors=True)
        results.append(res)
        if log is not None:
            log({"success_plain": res.success_plain, "success_with_experience": res.success_with_experience,
                 "teacher_rollout_success": res.teacher_rollout_success, "pool_size": float(res.pool_size)}, it)
    return model, tok, pool, results


def evaluate_with(model: Any, tok: Any, tasks: Sequence[Task], injector: Injector | None, *,
                  prompt: PromptConfig, batch_size: int = 128, label: str = "eval", max_new_tokens: int = 96) -> float:
    """Greedy success of `model` on `tasks` with an optional injector."""
    if not tasks:
        return math.nan
    return success_rate(run_policy(model, tok, tasks, injector=injector, k=1, temperature=0.0, seed=0,
                                   iteration=0, batch_size=batch_size, label=label, prompt=prompt,
                                   max_new_tokens=max_new_tokens))

"""The offline score of a model on imported logs: held-out next-action accuracy.

Imported episodes cannot be replayed (their environment's state is not in the log), so a
model is scored against them the way a teacher-forced evaluation would: at every step of a
held-out episode the model sees what the logged agent saw (the instruction, the earlier
observations and the *logged* actions, the current observation) and decodes its next action
greedily; the score is the share of steps where that action equals the logged one. Equal
means the same call (tool and arguments, as the environment's parser reads them) when both
parse, otherwise the same text.

Held out means the tasks the warm-up holds out for its evaluation loss: the same hash of
(seed, task id) below a fraction (`train.warmup.held_out`), so a model warmed up on imported
logs with `eval_fraction` f and seed s is scored on exactly the tasks it never trained on.
The defaults are read from the model's card when it records them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from distillery.envs.actions import parse_action
from distillery.envs.base import env_names, tool_specs
from distillery.types import Context, Task, Turn


def _unit_hash(seed: int | str, key: str) -> float:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "little") / 2**64


def held_out_tasks(task_ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The warm-up's held-out slice of `task_ids` (the same function as `train.warmup.held_out`,
    which this layer cannot import): by hash, so adding tasks moves none."""
    return {t for t in task_ids if _unit_hash(seed, t) < fraction}


def same_action(a: str, b: str, env: str) -> bool:
    """Whether two actions are the same call in `env` (or the same text when either does not parse)."""
    if env in set(env_names()):
        specs = tool_specs(env)
        pa, pb = parse_action(a, specs), parse_action(b, specs)
        if pa.valid and pb.valid and pa.call is not None and pb.call is not None:
            return pa.call == pb.call
    return a.strip() == b.strip()


@dataclass
class AccuracyResult:
    """`steps` has one row per scored step: episode_id, task_id, family, t, logged, predicted, correct."""

    accuracy: float | None          # None: no step to score
    n_steps: int
    n_correct: int
    n_episodes: int
    held_out_tasks: int
    fraction: float
    seed: int
    skipped: dict[str, int] = field(default_factory=dict)   # why episodes were not scored -> count
    steps: pl.DataFrame = field(default_factory=pl.DataFrame)

    def by_family(self) -> dict[str, float]:
        if self.steps.is_empty():
            return {}
        agg = self.steps.group_by("family").agg(pl.col("correct").cast(pl.Float64).mean()).sort("family")
        return dict(agg.iter_rows())

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n_steps": self.n_steps, "n_correct": self.n_correct,
                "n_episodes": self.n_episodes, "held_out_tasks": self.held_out_tasks,
                "fraction": self.fraction, "seed": self.seed, "skipped": dict(self.skipped),
                "by_family": self.by_family()}


def card_held_out(card: Mapping[str, Any]) -> tuple[float | None, int | None]:
    """(eval_fraction, seed) as a warm-up card records them, or None where it does not."""
    params = card.get("params") or {}
    fraction = params.get("eval_fraction")
    seed = card.get("seed")
    return (float(fraction) if isinstance(fraction, int | float) else None,
            int(seed) if isinstance(seed, int) else None)


def next_action_accuracy(
    model_dir: str,
    tasks: Mapping[str, Task] | Sequence[Task],
    episodes: pl.DataFrame,
    steps: pl.DataFrame,
    *,
    fraction: float | None = None,
    seed: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 96,
    device: str = "cpu",
    policy: Any = None,
    progress: bool = False,
) -> AccuracyResult:
    """Greedy next-action accuracy of the model in `model_dir` on the held-out steps of
    imported `episodes`/`steps` (their `tasks` give the instructions).

    `fraction`/`seed` pick the held-out tasks (default: the model card's warm-up
    `eval_fraction` and seed, else 0.1 and 0; `fraction=1` scores every step). Episodes of an
    environment no installed plugin registers are skipped (the model acts in registered ones
    only), and counted in `skipped`. `policy` may be an already-built `HFPolicy`.
    """
    from tqdm.auto import tqdm

    from distillery.agents.hf import HFPolicy

    by_id = dict(tasks) if isinstance(tasks, Mapping) else {t.task_id: t for t in tasks}
    if policy is None:
        policy = HFPolicy(model_dir, temperature=0.0, max_new_tokens=max_new_tokens, device=device,
                          reuse_prefix=False)   # teacher forcing: a cached prefix would hold the model's own actions
    card_fraction, card_seed = _card_of(model_dir)
    fraction = fraction if fraction is not None else card_fraction if card_fraction is not None else 0.1
    seed = seed if seed is not None else card_seed if card_seed is not None else 0
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    registered = set(env_names())
    hold = held_out_tasks(sorted(set(episodes["task_id"].to_list())), fraction, seed)
    skipped: dict[str, int] = {}
    contexts: list[tuple[Context, str, str]] = []     # (context, logged action, family)
    turns_of: dict[str, list[tuple[str, str]]] = {}
    for eid, obs, action in steps.sort("episode_id", "t").select("episode_id", "observation", "action_text").iter_rows():
        turns_of.setdefault(eid, []).append((obs, action))
    n_episodes = 0
    for ep in episodes.sort("episode_id").iter_rows(named=True):
        if ep["task_id"] not in hold:
            continue
        task = by_id.get(ep["task_id"])
        if task is None:
            skipped["task not in the tasks given"] = skipped.get("task not in the tasks given", 0) + 1
            continue
        if task.env not in registered:
            why = f"environment {task.env!r} not registered"
            skipped[why] = skipped.get(why, 0) + 1
            continue
        turns = turns_of.get(ep["episode_id"], [])
        if not turns:
            continue
        n_episodes += 1
        for t, (obs, action) in enumerate(turns):
            history = [Turn(o, a) for o, a in turns[:t]]
            contexts.append((Context(episode_id=f"{ep['episode_id']}@{t}", task=task, t=t, observation=obs,
                                     history=history, seed=int(ep["seed"])), action, task.family))
    rows = []
    bar = tqdm(total=len(contexts), desc="next-action accuracy", unit="step", disable=not progress)
    for i in range(0, len(contexts), batch_size):
        batch = contexts[i:i + batch_size]
        outs = policy.act([c for c, _, _ in batch])
        for (ctx, logged, fam), out in zip(batch, outs, strict=True):
            rows.append({"episode_id": ctx.episode_id.rsplit("@", 1)[0], "task_id": ctx.task.task_id,
                         "family": fam, "t": ctx.t, "logged": logged, "predicted": out.text,
                         "correct": same_action(out.text, logged, ctx.task.env)})
        bar.update(len(batch))
    bar.close()
    frame = pl.DataFrame(rows, schema={"episode_id": pl.String, "task_id": pl.String, "family": pl.String,
                                       "t": pl.Int64, "logged": pl.String, "predicted": pl.String,
                                       "correct": pl.Boolean}, orient="row")
    n_correct = int(frame["correct"].sum()) if frame.height else 0
    return AccuracyResult(accuracy=n_correct / frame.height if frame.height else None, n_steps=frame.height,
                          n_correct=n_correct, n_episodes=n_episodes, held_out_tasks=len(hold),
                          fraction=fraction, seed=seed, skipped=skipped, steps=frame)


def _card_of(model_dir: str) -> tuple[float | None, int | None]:
    import json
    from pathlib import Path

    card = Path(model_dir) / "card.json"
    if not card.is_file():
        return None, None
    try:
        return card_held_out(json.loads(card.read_text()))
    except ValueError:
        return None, None

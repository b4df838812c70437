"""Dual-Track GRPO (TRUST-SQL, arXiv 2603.16448) as pure functions over tensors and frames.

Two rewards per episode, each normalised within its group *separately*:

- the **execution track** (execution reward + format reward) gives A^exec, applied to every
  policy token of the episode;
- the **exploration track** (the schema reward of the last proposal) gives A^schema,
  applied only to the policy tokens up to the end of the Propose turn (the prefix).

    L = w_s * PG(A^schema, prefix mask) + PG(A^exec, full mask)

where PG is the PPO-clip surrogate with decoupled bounds, each a token mean over its own
mask (`train.losses.ppo_clip_token_losses`, `masked_token_mean`). Defaults: w_s = 0.25,
clip 0.2 / 0.28, KL 0. [read-from-source: a public training repository whose owner is not
an author (reference/trust_sql.md): two advantages, prefix boundary, weights, clip]

An episode without an accepted proposal has **no exploration track**: its schema advantage
is 0, its prefix mask is empty, and it does not enter the exploration statistics of its
group (ours: the repository drops the schema reward there and falls back to the last
Explore turn as the boundary; the specification this implements says "no proposal, no exploration
track"). Standard GRPO, the comparison, sums the rewards into one and applies one
advantage to every token (`summed_grpo_advantages`); with w_s = 0 Dual-Track is GRPO on
the execution track alone (tested).

Tensor functions take [N] episode vectors and a dense group index (`advantages.
dense_group_index`); `dual_track_frame` does the same on an episodes frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import torch

from distillery.train.advantages import AdvantageMode, dense_group_index, group_relative_advantages
from distillery.train.losses import masked_token_mean, ppo_clip_token_losses

DEFAULT_SCHEMA_WEIGHT = 0.25


@dataclass(frozen=True)
class DualTrackAdvantages:
    """Per-episode advantages [N] (float64) of the two tracks."""

    execution: torch.Tensor
    schema: torch.Tensor


def dual_track_advantages(
    execution_rewards: torch.Tensor,
    schema_rewards: torch.Tensor,
    group_index: torch.Tensor,
    has_proposal: torch.Tensor,
    *,
    mode: AdvantageMode = "mean_std_norm",
    epsilon: float = 1e-6,
) -> DualTrackAdvantages:
    """Each track normalised within its group separately.

    A^exec_i   = (R^exec_i - mean_g R^exec) / (std_g R^exec + eps)          over all of group g
    A^schema_i = (R^schema_i - mean_P R^schema) / (std_P R^schema + eps)    over P = the members
                 of g that proposed; 0 for an episode without a proposal

    (or the deviation alone under `mean_norm`). A constant group, and a group with a single
    proposer, gives 0 on that track (`advantages.group_relative_advantages`).
    """
    ex = execution_rewards.detach().to(torch.float64).reshape(-1)
    sc = schema_rewards.detach().to(torch.float64).reshape(-1)
    gi = group_index.reshape(-1).long()
    prop = has_proposal.reshape(-1).bool()
    if not (ex.numel() == sc.numel() == gi.numel() == prop.numel()):
        raise ValueError(f"dual_track_advantages: lengths differ ({ex.numel()}, {sc.numel()}, {gi.numel()}, "
                         f"{prop.numel()})")
    a_exec = group_relative_advantages(ex, gi, mode=mode, epsilon=epsilon)
    a_schema = torch.zeros_like(sc)
    if bool(prop.any()):
        # proposers only: a group's non-proposers must not pull its schema baseline down
        sub = group_relative_advantages(sc[prop], dense_group_index(gi[prop].tolist()), mode=mode, epsilon=epsilon)
        a_schema[prop] = sub
    return DualTrackAdvantages(a_exec, a_schema)


def summed_grpo_advantages(
    execution_rewards: torch.Tensor,
    schema_rewards: torch.Tensor,
    group_index: torch.Tensor,
    *,
    mode: AdvantageMode = "mean_std_norm",
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """Standard GRPO, the paper's comparison: one reward R = R^exec + R^schema (0 without a
    proposal), one group-relative advantage applied to every token."""
    total = execution_rewards.detach().to(torch.float64) + schema_rewards.detach().to(torch.float64)
    return group_relative_advantages(total, group_index, mode=mode, epsilon=epsilon)


def prefix_steps(step_index: torch.Tensor, proposal_step: torch.Tensor) -> torch.Tensor:
    """Bool [...]: a step is in the exploration prefix when t <= its episode's proposal step
    (the turn of the last accepted proposal, inclusive); a proposal step of -1 (no proposal)
    puts no step in it."""
    return (proposal_step >= 0) & (step_index <= proposal_step)


@dataclass(frozen=True)
class DualTrackLoss:
    loss: torch.Tensor
    parts: dict[str, float]


def dual_track_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    execution_advantages: torch.Tensor,
    schema_advantages: torch.Tensor,
    mask: torch.Tensor,
    prefix_mask: torch.Tensor,
    *,
    schema_weight: float = DEFAULT_SCHEMA_WEIGHT,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> DualTrackLoss:
    """L = w_s * mean_{mask & prefix} l^clip(A^schema) + mean_{mask} l^clip(A^exec).

    Shapes [B, T] for log-probs and masks; advantages [B] (per sequence) or [B, T] (per
    token: one episode as one sequence, each step's tokens carrying its episode's values).
    `mask` marks the policy's action tokens, `prefix_mask` those up to the end of the Propose
    turn (it is intersected with `mask`). Each track is a token mean over its own mask, so a
    batch without any prefix token adds exactly 0 for the exploration track.
    """
    mask = mask.bool()
    prefix = prefix_mask.bool() & mask
    exec_tokens = ppo_clip_token_losses(logprobs, sampler_logprobs, execution_advantages,
                                        clip_low=clip_low, clip_high=clip_high)
    exec_loss = masked_token_mean(exec_tokens, mask)
    loss = exec_loss
    parts = {"exec_loss": float(exec_loss.detach())}
    if schema_weight != 0.0:
        schema_tokens = ppo_clip_token_losses(logprobs, sampler_logprobs, schema_advantages,
                                              clip_low=clip_low, clip_high=clip_high)
        schema_loss = masked_token_mean(schema_tokens, prefix)
        loss = loss + schema_weight * schema_loss
        parts["schema_loss"] = float(schema_loss.detach())
    with torch.no_grad():
        parts["prefix_fraction"] = float(prefix.sum() / mask.sum().clamp(min=1))
    return DualTrackLoss(loss, parts)


def dual_track_frame(
    episodes: pl.DataFrame,
    *,
    execution: str = "execution_reward",
    schema: str = "schema_reward",
    proposal_step: str = "proposal_step",
    mode: AdvantageMode = "mean_std_norm",
    epsilon: float = 1e-6,
) -> pl.DataFrame:
    """`dual_track_advantages` and `summed_grpo_advantages` on an episodes frame.

    Input columns: `group`, the two reward columns and `proposal_step` (-1: none). Output:
    the same rows plus `exec_advantage`, `schema_advantage` and `grpo_advantage` (Float64).
    The schema reward of an episode without a proposal counts as 0 in the summed reward.
    """
    missing = [c for c in ("group", execution, schema, proposal_step) if c not in episodes.columns]
    if missing:
        raise ValueError(f"episodes frame lacks column(s) {missing}; it has {episodes.columns}")
    gi = dense_group_index(episodes["group"].to_list())
    ex = torch.tensor(episodes[execution].cast(pl.Float64).to_list(), dtype=torch.float64)
    prop = torch.tensor([p >= 0 for p in episodes[proposal_step].to_list()], dtype=torch.bool)
    sc = torch.tensor(episodes[schema].cast(pl.Float64).to_list(), dtype=torch.float64)
    sc = torch.where(prop, sc, torch.zeros_like(sc))
    dual = dual_track_advantages(ex, sc, gi, prop, mode=mode, epsilon=epsilon)
    grpo = summed_grpo_advantages(ex, sc, gi, mode=mode, epsilon=epsilon)
    return episodes.with_columns(
        pl.Series("exec_advantage", dual.execution.tolist(), dtype=pl.Float64),
        pl.Series("schema_advantage", dual.schema.tolist(), dtype=pl.Float64),
        pl.Series("grpo_advantage", grpo.tolist(), dtype=pl.Float64),
    )

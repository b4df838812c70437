"""Advantage estimators for critic-free RL: GRPO, discounted step returns, GiGPO.

Two layers, both pure:
- tensor functions (`group_relative_advantages`, `discounted_returns`) do the arithmetic;
- frame functions take the rollout artifacts (`types.EPISODE_SCHEMA` / `STEP_SCHEMA` frames,
  or any frame with the columns each docstring names) and return the same rows with the
  advantage columns added, so a trainer joins them to its token batches by `episode_id`/`t`.

Frames in:
- episodes: `episode_id`, `group` (the G rollouts of one task share it), and a reward column
  (`score` by default; pass `reward="success"` or a shaped column to use another);
- steps: `episode_id`, `t`, `observation` (the raw text the agent saw: GiGPO's anchor state),
  `reward` (the per-step environment reward).

Advantages are computed in float64 and returned as plain floats in the frame.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Literal

import polars as pl
import torch

AdvantageMode = Literal["mean_norm", "mean_std_norm"]
"""`mean_norm`: A = x - mean (GiGPO's default); `mean_std_norm`: A = (x - mean) / (std + eps)."""

SingletonRule = Literal["zero", "raw"]
"""What a group of one gets: `zero` (no comparison, no signal) or `raw`, verl's episode rule of
mean 0 and std 1 (so A = x under mean_norm and x / (1 + eps) under mean_std_norm)."""

ADVANTAGE_MODES: tuple[str, ...] = ("mean_norm", "mean_std_norm")


def dense_group_index(keys: Sequence[Hashable]) -> torch.Tensor:
    """Map arbitrary group keys to 0..G-1 in order of first appearance (a LongTensor [N])."""
    ids: dict[Hashable, int] = {}
    return torch.tensor([ids.setdefault(k, len(ids)) for k in keys], dtype=torch.long)


def group_relative_advantages(
    values: torch.Tensor,
    group_index: torch.Tensor,
    *,
    mode: AdvantageMode = "mean_std_norm",
    epsilon: float = 1e-6,
    singleton: SingletonRule = "zero",
) -> torch.Tensor:
    """Group-relative advantage of each value against the other members of its group.

    For value x_i in group g with members {x_j}:
        mean_norm:      A_i = x_i - mean_g
        mean_std_norm:  A_i = (x_i - mean_g) / (std_g + epsilon)
    where std_g is the unbiased (Bessel-corrected) standard deviation, as `torch.std` in
    verl's GRPO and GiGPO. [read-from-source: verl `compute_grpo_outcome_advantage`,
    verl-agent `episode_norm_reward` / `step_norm_reward`]

    Edge cases, each exact (no float residue, no NaN):
    - a group whose values are all equal gets A = 0 (floating-point `sum/n` can leave a
      residue of ~1e-8 that `/ (0 + 1e-6)` would blow up to ~1e-2, so constant groups are
      detected and zeroed explicitly);
    - a group of one follows `singleton`: `zero` gives A = 0; `raw` uses mean 0 and std 1.

    Args:
        values: [N] rewards or returns.
        group_index: [N] long, group id of each value (see `dense_group_index`).
        mode: `mean_norm` or `mean_std_norm`.
        epsilon: added to the std before dividing.
        singleton: rule for groups of size one.

    Returns:
        [N] advantages, float64.
    """
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"mode={mode!r}: use one of {ADVANTAGE_MODES}")
    if singleton not in ("zero", "raw"):
        raise ValueError(f"singleton={singleton!r}: use 'zero' or 'raw'")
    x = values.detach().to(torch.float64).reshape(-1)
    gi = group_index.reshape(-1).long()
    if x.numel() != gi.numel():
        raise ValueError(f"values has {x.numel()} entries but group_index has {gi.numel()}")
    if x.numel() == 0:
        return x
    n_groups = int(gi.max()) + 1
    zeros = torch.zeros(n_groups, dtype=torch.float64)
    count = zeros.index_add(0, gi, torch.ones_like(x))
    mean = zeros.index_add(0, gi, x) / count.clamp(min=1)
    dev = x - mean[gi]
    var = zeros.index_add(0, gi, dev * dev) / (count - 1).clamp(min=1)
    std = var.sqrt()
    g_max = zeros.scatter_reduce(0, gi, x, reduce="amax", include_self=False)
    g_min = zeros.scatter_reduce(0, gi, x, reduce="amin", include_self=False)

    is_single = count[gi] == 1
    if singleton == "raw":
        dev = torch.where(is_single, x, dev)  # mean 0 ...
        std = torch.where(count == 1, torch.ones_like(std), std)  # ... and std 1
    adv = dev if mode == "mean_norm" else dev / (std[gi] + epsilon)

    constant = (g_max[gi] == g_min[gi]) & ~is_single
    zero_out = constant | (is_single if singleton == "zero" else torch.zeros_like(is_single))
    return torch.where(zero_out, torch.zeros_like(adv), adv)


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go of one episode whose rewards are in time order.

    R_t = sum_{k >= t} gamma^(k - t) * r_k, computed backwards as R_t = r_t + gamma * R_{t+1}.
    [read-from-source: verl-agent `compute_step_discounted_returns`]
    """
    r = rewards.detach().to(torch.float64).reshape(-1)
    out = torch.empty_like(r)
    running = 0.0
    for t in range(r.numel() - 1, -1, -1):
        running = float(r[t]) + gamma * running
        out[t] = running
    return out


def _require_columns(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks column(s) {missing}; it has {frame.columns}")


def grpo_advantages(
    episodes: pl.DataFrame,
    *,
    reward: str = "score",
    mode: AdvantageMode = "mean_std_norm",
    epsilon: float = 1e-6,
) -> pl.DataFrame:
    """GRPO: each episode's reward against its group, one advantage per episode.

    A_i = (R_i - mean_g R) / (std_g R + epsilon)  (or R_i - mean_g R under `mean_norm`).
    All-equal rewards and singleton groups give 0. [read-from-source: verl GRPO; the
    singleton rule is ours: verl uses mean 0 / std 1 there, which turns a lone reward into
    an advantage without any comparison]

    Input columns: `group`, `reward`. Output: the same rows plus `advantage` (Float64).
    """
    _require_columns(episodes, ["group", reward], "episodes")
    values = torch.tensor(episodes[reward].cast(pl.Float64).to_list(), dtype=torch.float64)
    adv = group_relative_advantages(
        values, dense_group_index(episodes["group"].to_list()), mode=mode, epsilon=epsilon
    )
    return episodes.with_columns(pl.Series("advantage", adv.tolist(), dtype=pl.Float64))


def step_returns(steps: pl.DataFrame, *, gamma: float) -> pl.DataFrame:
    """Per-step discounted return within each episode (`discounted_returns` ordered by `t`).

    Input columns: `episode_id`, `t`, `reward`. Output: the same rows (sorted by
    `episode_id`, `t`) plus `step_return` (Float64).
    """
    _require_columns(steps, ["episode_id", "t", "reward"], "steps")
    ordered = steps.sort(["episode_id", "t"], maintain_order=True)
    returns: list[float] = []
    for (_,), episode in ordered.group_by("episode_id", maintain_order=True):
        rewards = torch.tensor(episode["reward"].cast(pl.Float64).to_list(), dtype=torch.float64)
        returns.extend(discounted_returns(rewards, gamma).tolist())
    return ordered.with_columns(pl.Series("step_return", returns, dtype=pl.Float64))


def gigpo_episode_advantages(
    episodes: pl.DataFrame,
    *,
    reward: str = "score",
    mode: AdvantageMode = "mean_norm",
    epsilon: float = 1e-6,
) -> pl.DataFrame:
    """GiGPO episode (macro) advantage: A^E_i = (R(tau_i) - mean_j R(tau_j)) / F.

    F = std_j + epsilon under `mean_std_norm`, F = 1 under `mean_norm`. The statistics are
    taken over *unique trajectories*: rows are de-duplicated by (`group`, `episode_id`)
    first, so a frame with one row per step sample (each carrying its episode's reward)
    weighs a 30-step failure and a 3-step success equally. A group holding a single
    trajectory gets mean 0 and std 1, i.e. A^E = R. [read-from-source: verl-agent
    `episode_norm_reward`, de-duplication by (uid, traj_uid) and the singleton rule]

    Input columns: `group`, `episode_id`, `reward`. Output: the same rows plus
    `episode_advantage` (Float64). Raises if one episode carries two different rewards.
    """
    _require_columns(episodes, ["group", "episode_id", reward], "episodes")
    unique = episodes.select("group", "episode_id", reward).unique(maintain_order=True)
    clash = unique.group_by("group", "episode_id").len().filter(pl.col("len") > 1)
    if clash.height:
        raise ValueError(
            f"episodes {clash['episode_id'].to_list()[:5]} carry more than one {reward!r} "
            "value; an episode's reward must be one number"
        )
    values = torch.tensor(unique[reward].cast(pl.Float64).to_list(), dtype=torch.float64)
    adv = group_relative_advantages(
        values,
        dense_group_index(unique["group"].to_list()),
        mode=mode,
        epsilon=epsilon,
        singleton="raw",
    )
    per_episode = unique.select("group", "episode_id").with_columns(
        pl.Series("episode_advantage", adv.tolist(), dtype=pl.Float64)
    )
    return episodes.join(per_episode, on=["group", "episode_id"], how="left", maintain_order="left")


def gigpo_step_advantages(
    steps: pl.DataFrame,
    *,
    gamma: float = 0.95,
    mode: AdvantageMode = "mean_norm",
    epsilon: float = 1e-6,
) -> pl.DataFrame:
    """GiGPO step (micro) advantage over anchor-state groups.

    Anchor-state group: within one task group, every step sample whose raw `observation`
    text is identical, across trajectories and across repeated visits within one trajectory
    (each visit is its own sample). Then, with R_t the discounted step return,
        A^S = (R_t - mean_{G^S} R) / F_{G^S},  F as in `gigpo_episode_advantages`.
    A singleton anchor group has mean equal to its own value, so A^S = 0 (GiGPO falls back
    to the episode advantage there). [read-from-source: verl-agent `build_step_group`
    (exact-match clustering; the optional difflib fuzzy matching is not implemented) and
    `step_norm_reward`]

    Input columns: `group`, `episode_id`, `t`, `observation`, `reward`. Output: the rows
    sorted by `episode_id`, `t`, plus `step_return`, `anchor_group` (Int64, dense id of the
    (group, observation) cluster) and `step_advantage` (Float64).
    """
    _require_columns(steps, ["group", "episode_id", "t", "observation", "reward"], "steps")
    with_returns = step_returns(steps, gamma=gamma)
    anchor = dense_group_index(
        list(zip(with_returns["group"].to_list(), with_returns["observation"].to_list(), strict=True))
    )
    returns = torch.tensor(with_returns["step_return"].to_list(), dtype=torch.float64)
    adv = group_relative_advantages(returns, anchor, mode=mode, epsilon=epsilon, singleton="zero")
    return with_returns.with_columns(
        pl.Series("anchor_group", anchor.tolist(), dtype=pl.Int64),
        pl.Series("step_advantage", adv.tolist(), dtype=pl.Float64),
    )


def gigpo_advantages(
    episodes: pl.DataFrame,
    steps: pl.DataFrame,
    *,
    reward: str = "score",
    gamma: float = 0.95,
    step_weight: float = 1.0,
    mode: AdvantageMode = "mean_norm",
    epsilon: float = 1e-6,
) -> pl.DataFrame:
    """GiGPO combined advantage per step: A = A^E + omega * A^S.

    The trainer broadcasts A over the action tokens of that step's response. Defaults are
    the verl-agent ALFWorld script's: gamma 0.95, omega 1.0, `mean_norm`.
    [read-from-source: verl-agent `compute_gigpo_outcome_advantage`]

    Args:
        episodes: `episode_id`, `group`, `reward` (one row per episode).
        steps: `episode_id`, `t`, `observation`, `reward` (the step's environment reward).
        reward: the episodes column holding R(tau).
        gamma: discount of the step returns.
        step_weight: omega, the weight of the step advantage.
        mode: `mean_norm` or `mean_std_norm`, used at both levels.
        epsilon: added to the std under `mean_std_norm`.

    Returns:
        One row per step (sorted by `episode_id`, `t`): `episode_id`, `t`, `group`,
        `anchor_group`, `step_return`, `episode_advantage`, `step_advantage`, `advantage`.
        Raises if a step's episode is not in `episodes`.
    """
    _require_columns(episodes, ["episode_id", "group", reward], "episodes")
    _require_columns(steps, ["episode_id", "t", "observation", "reward"], "steps")
    orphans = steps.join(episodes.select("episode_id"), on="episode_id", how="anti")
    if orphans.height:
        raise ValueError(
            f"steps of episodes {orphans['episode_id'].unique().to_list()[:5]} have no row in "
            "the episodes frame; pass the episodes these steps came from"
        )
    episode_adv = gigpo_episode_advantages(episodes, reward=reward, mode=mode, epsilon=epsilon)
    grouped_steps = steps.drop("group", strict=False).join(
        episode_adv.select("episode_id", "group", "episode_advantage"), on="episode_id"
    )
    out = gigpo_step_advantages(grouped_steps, gamma=gamma, mode=mode, epsilon=epsilon)
    return out.select(
        "episode_id",
        "t",
        "group",
        "anchor_group",
        "step_return",
        "episode_advantage",
        "step_advantage",
        advantage=pl.col("episode_advantage") + step_weight * pl.col("step_advantage"),
    )


# ---------------------------------------------------------------------------------------
# DAPO and PGPO: rewards and dynamic sampling (pure; the table track's trainer uses them)
# ---------------------------------------------------------------------------------------


def soft_overlong_penalty(lengths: torch.Tensor, *, max_length: int, cache: int) -> torch.Tensor:
    """DAPO's soft length penalty per response, float64 [N]:

        0                                 if L <= max_length - cache
        (max_length - cache - L) / cache  if max_length - cache < L <= max_length
        -1                                if L > max_length

    [read-from-source: DAPO recipe, overlong buffer with penalty factor 1]
    """
    if cache <= 0 or cache > max_length:
        raise ValueError(f"cache={cache}: it must lie in (0, max_length={max_length}]")
    L = lengths.detach().to(torch.float64).reshape(-1)
    start = max_length - cache
    inside = (start - L) / cache
    return torch.where(L <= start, torch.zeros_like(L), torch.where(L <= max_length, inside, -torch.ones_like(L)))


def mixed_groups(values: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
    """DAPO's dynamic-sampling filter: True for every member of a group whose values are not
    all equal (for 0/1 outcomes: 0 < #correct < G), [N] bool. A group of one is never mixed.
    Such groups have zero group-relative advantage and would only dilute the batch.
    [read-from-source: DAPO `filter_groups`]"""
    x = values.detach().to(torch.float64).reshape(-1)
    gi = group_index.reshape(-1).long()
    if x.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    n = int(gi.max()) + 1
    g_max = torch.full((n,), -math.inf, dtype=torch.float64).scatter_reduce(0, gi, x, reduce="amax", include_self=True)
    g_min = torch.full((n,), math.inf, dtype=torch.float64).scatter_reduce(0, gi, x, reduce="amin", include_self=True)
    return (g_max > g_min)[gi]


def process_gated_rewards(
    outcome: torch.Tensor,
    step_scores: Sequence[Sequence[float]],
    *,
    coverage: torch.Tensor | None = None,
    gate: Literal["min", "product"] = "min",
    prefix_credit: float = 0.1,
) -> torch.Tensor:
    """PGPO's reward, our reading of the abstract (reference/vision.md), float64 [N]:

        g_i = min_t s_it (or prod_t s_it) x coverage_i       (1 when a chain has no step)
        R_i = r_i x g_i + (1 - r_i) x prefix_credit x p_i

    where r_i is the outcome (1 right, 0 wrong), s_it in [0, 1] the critic's score of step t,
    coverage_i the share of the gold program's cells the chain read (1 when not given), and
    p_i the fraction of the chain's steps before its first step scored below 0.5 (a small
    credit for a sound start when the answer is wrong). The outcome stays primary: the
    process only gates it (a right answer reached by a misread or a shortcut earns little),
    never adds to it (blending is unstable, PROF). [inferred: ours]
    """
    r = outcome.detach().to(torch.float64).reshape(-1)
    if len(step_scores) != r.numel():
        raise ValueError(f"{r.numel()} outcomes but {len(step_scores)} rows of step scores")
    cov = torch.ones_like(r) if coverage is None else coverage.detach().to(torch.float64).reshape(-1)
    g, p = torch.ones_like(r), torch.zeros_like(r)
    for i, s in enumerate(step_scores):
        if not len(s):
            continue
        st = torch.tensor([float(x) for x in s], dtype=torch.float64).clamp(0.0, 1.0)
        g[i] = st.min() if gate == "min" else st.prod()
        bad = (st < 0.5).nonzero()
        p[i] = (int(bad[0]) if len(bad) else len(s)) / len(s)
    return r * g * cov + (1.0 - r) * prefix_credit * p


def length_balanced_groups(lengths: Sequence[int], n: int) -> list[int]:
    """PGPO's length-aware batch (ours): the indices of up to `n` groups, taken round-robin
    over the distinct program lengths `lengths[g]` (shortest length first, and in arrival
    order within a length), so every length present is represented as equally as the pool
    allows. Returned in ascending index order."""
    by_len: dict[int, list[int]] = {}
    for i, L in enumerate(lengths):
        by_len.setdefault(int(L), []).append(i)
    queues = [by_len[k] for k in sorted(by_len)]
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return sorted(picked)

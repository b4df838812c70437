"""Advantage estimators against numbers worked out by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from distillery.train.advantages import (
    dense_group_index,
    discounted_returns,
    gigpo_advantages,
    gigpo_episode_advantages,
    gigpo_step_advantages,
    group_relative_advantages,
    grpo_advantages,
    step_returns,
)

EPS = 1e-6


def approx(values, expected, tol=1e-9):
    assert len(values) == len(expected)
    for got, want in zip(values, expected, strict=True):
        assert got == pytest.approx(want, abs=tol), (values, expected)


# --- group_relative_advantages ------------------------------------------------------------


def test_dense_group_index_keeps_first_appearance_order():
    assert dense_group_index(["b", "a", "b", "c"]).tolist() == [0, 1, 0, 2]


def test_mean_std_norm_uses_unbiased_std():
    # group [1, 0, 0, 1]: mean 0.5; deviations +-0.5; unbiased var = 4 * 0.25 / 3 = 1/3
    std = math.sqrt(1 / 3)
    adv = group_relative_advantages(
        torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 0, 0]), mode="mean_std_norm"
    )
    approx(adv.tolist(), [0.5 / (std + EPS), -0.5 / (std + EPS), -0.5 / (std + EPS), 0.5 / (std + EPS)])


def test_mean_norm_subtracts_group_mean_only():
    # group 0: [3, 1] mean 2 -> [1, -1]; group 1: [10, 4, 4] mean 6 -> [4, -2, -2]
    adv = group_relative_advantages(
        torch.tensor([3.0, 10.0, 1.0, 4.0, 4.0]), torch.tensor([0, 1, 0, 1, 1]), mode="mean_norm"
    )
    approx(adv.tolist(), [1.0, 4.0, -1.0, -2.0, -2.0])


def test_epsilon_is_added_to_std():
    # [2, 0]: mean 1, unbiased std = sqrt((1 + 1) / 1) = sqrt(2); eps = 0.5 shows in the result
    adv = group_relative_advantages(torch.tensor([2.0, 0.0]), torch.tensor([0, 0]), epsilon=0.5)
    approx(adv.tolist(), [1 / (math.sqrt(2) + 0.5), -1 / (math.sqrt(2) + 0.5)])


def test_all_equal_rewards_give_exact_zeros_not_float_residue():
    # 0.1 * 3 / 3 != 0.1 in floating point; (x - mean) / (0 + 1e-6) would be ~1e-10 / 1e-6,
    # the function must return exact zeros
    adv = group_relative_advantages(torch.tensor([0.1, 0.1, 0.1]), torch.tensor([0, 0, 0]))
    assert adv.tolist() == [0.0, 0.0, 0.0]
    assert not torch.isnan(adv).any()


def test_singleton_group_zero_and_raw_rules():
    values, groups = torch.tensor([5.0, 1.0, 3.0]), torch.tensor([0, 1, 1])
    # zero rule: the lone 5 gets 0; group 1 [1, 3] mean 2 -> [-1, 1]
    zero = group_relative_advantages(values, groups, mode="mean_norm", singleton="zero")
    approx(zero.tolist(), [0.0, -1.0, 1.0])
    # raw rule (verl-agent episode level): mean 0, std 1 -> 5 / (1 + eps) under mean_std_norm
    raw = group_relative_advantages(values, groups, mode="mean_std_norm", singleton="raw")
    std = math.sqrt(2.0)  # [1, 3]: deviations +-1, unbiased var 2 / 1
    approx(raw.tolist(), [5.0 / (1.0 + EPS), -1 / (std + EPS), 1 / (std + EPS)])


def test_empty_input_and_bad_arguments():
    assert group_relative_advantages(torch.tensor([]), torch.tensor([], dtype=torch.long)).numel() == 0
    with pytest.raises(ValueError, match="mode="):
        group_relative_advantages(torch.tensor([1.0]), torch.tensor([0]), mode="zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group_index"):
        group_relative_advantages(torch.tensor([1.0, 2.0]), torch.tensor([0]))


# --- discounted returns -------------------------------------------------------------------


def test_discounted_returns_by_hand():
    # r = [1, 0, 2], gamma 0.5: R2 = 2; R1 = 0 + 0.5 * 2 = 1; R0 = 1 + 0.5 * 1 = 1.5
    approx(discounted_returns(torch.tensor([1.0, 0.0, 2.0]), 0.5).tolist(), [1.5, 1.0, 2.0])
    # gamma 0 is the immediate reward; gamma 1 the plain reward-to-go (3, 2, 2)
    approx(discounted_returns(torch.tensor([1.0, 0.0, 2.0]), 0.0).tolist(), [1.0, 0.0, 2.0])
    approx(discounted_returns(torch.tensor([1.0, 0.0, 2.0]), 1.0).tolist(), [3.0, 2.0, 2.0])


def test_step_returns_orders_by_t_within_each_episode():
    steps = pl.DataFrame(
        {"episode_id": ["b", "a", "a"], "t": [0, 1, 0], "reward": [4.0, 10.0, 0.0]}
    )
    out = step_returns(steps, gamma=0.9)
    assert out.select("episode_id", "t").rows() == [("a", 0), ("a", 1), ("b", 0)]
    # a: R1 = 10, R0 = 0 + 0.9 * 10 = 9; b: R0 = 4
    approx(out["step_return"].to_list(), [9.0, 10.0, 4.0])


# --- GRPO frame ---------------------------------------------------------------------------


def test_grpo_advantages_frame():
    episodes = pl.DataFrame(
        {
            "episode_id": ["a", "b", "c", "d", "e", "f"],
            "group": ["g", "g", "g", "h", "h", "lone"],
            "score": [1.0, 0.0, 0.5, 1.0, 1.0, 1.0],
        }
    )
    out = grpo_advantages(episodes)
    # g: [1, 0, 0.5] mean 0.5, deviations [.5, -.5, 0], unbiased var 0.5 / 2 = 0.25, std 0.5
    # h: all equal -> 0; lone: singleton -> 0
    approx(out["advantage"].to_list(), [0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS), 0.0, 0.0, 0.0, 0.0])


# --- GiGPO ---------------------------------------------------------------------------------


def test_gigpo_episode_statistics_over_unique_trajectories():
    # one row per step sample: episode a has 3 steps, b has 1, both in group g
    rows = pl.DataFrame(
        {
            "group": ["g", "g", "g", "g"],
            "episode_id": ["a", "a", "a", "b"],
            "score": [1.0, 1.0, 1.0, 0.0],
        }
    )
    out = gigpo_episode_advantages(rows, mode="mean_norm")
    # unique trajectories {a: 1, b: 0}: mean 0.5 -> a +0.5, b -0.5
    # (over the 4 samples the mean would be 0.75 and a would get only +0.25)
    approx(out["episode_advantage"].to_list(), [0.5, 0.5, 0.5, -0.5])

    out_std = gigpo_episode_advantages(rows, mode="mean_std_norm")
    # unique [1, 0]: unbiased std = sqrt((0.25 + 0.25) / (2 - 1)) = sqrt(0.5)
    s = math.sqrt(0.5)
    approx(out_std["episode_advantage"].to_list(), [0.5 / (s + EPS)] * 3 + [-0.5 / (s + EPS)])


def test_gigpo_episode_singleton_group_gets_raw_reward():
    # verl-agent: a group of one has mean 0 and std 1
    rows = pl.DataFrame({"group": ["g"], "episode_id": ["a"], "score": [0.7]})
    approx(gigpo_episode_advantages(rows, mode="mean_norm")["episode_advantage"].to_list(), [0.7])
    approx(
        gigpo_episode_advantages(rows, mode="mean_std_norm")["episode_advantage"].to_list(),
        [0.7 / (1 + EPS)],
    )


def test_gigpo_episode_rejects_two_rewards_for_one_episode():
    rows = pl.DataFrame({"group": ["g", "g"], "episode_id": ["a", "a"], "score": [1.0, 0.0]})
    with pytest.raises(ValueError, match="more than one"):
        gigpo_episode_advantages(rows)


def test_gigpo_step_anchor_groups_keyed_by_raw_observation_within_group():
    steps = pl.DataFrame(
        {
            "group": ["g", "g", "g", "g", "h"],
            "episode_id": ["a", "a", "b", "c", "d"],
            "t": [0, 1, 0, 0, 0],
            # a revisits "s0" at t=1 (joins the same anchor group); "s0 " differs by a space;
            # group h's "s0" is another task's state and must not join g's
            "observation": ["s0", "s0", "s0", "s0 ", "s0"],
            "reward": [0.0, 3.0, 1.0, 7.0, 2.0],
        }
    )
    out = gigpo_step_advantages(steps, gamma=0.5, mode="mean_norm")
    # returns: a: R1 = 3, R0 = 0 + 0.5 * 3 = 1.5; b: 1; c: 7; d: 2
    approx(out["step_return"].to_list(), [1.5, 3.0, 1.0, 7.0, 2.0])
    # anchor (g, "s0") = {a0: 1.5, a1: 3, b0: 1}: mean 5.5 / 3
    m = 5.5 / 3
    # (g, "s0 ") = {c0} and (h, "s0") = {d0} are singletons -> 0
    approx(out["step_advantage"].to_list(), [1.5 - m, 3.0 - m, 1.0 - m, 0.0, 0.0])
    anchors = out["anchor_group"].to_list()
    assert anchors[0] == anchors[1] == anchors[2]
    assert len({anchors[0], anchors[3], anchors[4]}) == 3


def test_gigpo_step_mean_std_norm():
    steps = pl.DataFrame(
        {
            "group": ["g", "g"],
            "episode_id": ["a", "b"],
            "t": [0, 0],
            "observation": ["s", "s"],
            "reward": [2.0, 0.0],
        }
    )
    out = gigpo_step_advantages(steps, gamma=0.95, mode="mean_std_norm")
    # [2, 0]: mean 1, unbiased std sqrt(2)
    s = math.sqrt(2.0)
    approx(out["step_advantage"].to_list(), [1 / (s + EPS), -1 / (s + EPS)])


def test_gigpo_combined_advantage_by_hand():
    episodes = pl.DataFrame(
        {
            "episode_id": ["a", "b", "c", "d"],
            "group": ["g", "g", "g", "h"],
            "score": [1.0, 0.0, 0.0, 1.0],
        }
    )
    steps = pl.DataFrame(
        {
            "episode_id": ["a", "a", "b", "b", "c", "d"],
            "t": [0, 1, 0, 1, 0, 0],
            "observation": ["s0", "s1", "s0", "s1", "s0", "x"],
            "reward": [0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        }
    )
    out = gigpo_advantages(episodes, steps, gamma=0.9, step_weight=0.5, mode="mean_norm")
    # episode level, group g {1, 0, 0}: mean 1/3 -> a 2/3, b -1/3, c -1/3; h is a singleton -> R = 1
    # step returns: a0 = 0 + 0.9 * 1 = 0.9, a1 = 1; b0 = b1 = 0; c0 = 0; d0 = 1
    # anchor (g, s0) = {a0 .9, b0 0, c0 0}: mean 0.3 -> [0.6, -0.3, -0.3]
    # anchor (g, s1) = {a1 1, b1 0}: mean 0.5 -> [0.5, -0.5]; (h, x) singleton -> 0
    # A = A^E + 0.5 * A^S
    expected = {
        ("a", 0): 2 / 3 + 0.5 * 0.6,
        ("a", 1): 2 / 3 + 0.5 * 0.5,
        ("b", 0): -1 / 3 + 0.5 * -0.3,
        ("b", 1): -1 / 3 + 0.5 * -0.5,
        ("c", 0): -1 / 3 + 0.5 * -0.3,
        ("d", 0): 1.0 + 0.5 * 0.0,
    }
    got = {(e, t): a for e, t, a in out.select("episode_id", "t", "advantage").rows()}
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        assert got[key] == pytest.approx(want, abs=1e-9), key
    assert out.columns == [
        "episode_id", "t", "group", "anchor_group", "step_return",
        "episode_advantage", "step_advantage", "advantage",
    ]


def test_gigpo_all_equal_rewards_group_gives_zero_everywhere():
    episodes = pl.DataFrame({"episode_id": ["a", "b"], "group": ["g", "g"], "score": [0.0, 0.0]})
    steps = pl.DataFrame(
        {"episode_id": ["a", "b"], "t": [0, 0], "observation": ["s", "s"], "reward": [0.0, 0.0]}
    )
    for mode in ("mean_norm", "mean_std_norm"):
        out = gigpo_advantages(episodes, steps, mode=mode)
        assert out["advantage"].to_list() == [0.0, 0.0]


def test_gigpo_rejects_steps_without_their_episode():
    episodes = pl.DataFrame({"episode_id": ["a"], "group": ["g"], "score": [1.0]})
    steps = pl.DataFrame(
        {"episode_id": ["a", "zz"], "t": [0, 0], "observation": ["s", "s"], "reward": [0.0, 0.0]}
    )
    with pytest.raises(ValueError, match="zz"):
        gigpo_advantages(episodes, steps)

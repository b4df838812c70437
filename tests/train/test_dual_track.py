"""Dual-Track GRPO against numbers worked out by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from distillery.train.advantages import dense_group_index, group_relative_advantages
from distillery.train.dual_track import (
    dual_track_advantages,
    dual_track_frame,
    dual_track_loss,
    prefix_steps,
    summed_grpo_advantages,
)
from distillery.train.losses import ppo_clip_loss

EPS = 1e-6


def approx(values, expected, tol=1e-6):
    assert len(values) == len(expected)
    for got, want in zip(values, expected, strict=True):
        assert got == pytest.approx(want, abs=tol), (values, expected)


def test_tracks_are_normalised_separately_mean_norm():
    # execution [1.1, 0.2, 0, 1.1]: mean 0.6 -> [0.5, -0.4, -0.6, 0.5]
    # schema over the proposers only (episode 2 proposed nothing): [1.0, 0.5, 0.8], mean 0.7667
    #   -> [0.2333, -0.2667, 0.0333]; episode 2 gets 0
    adv = dual_track_advantages(torch.tensor([1.1, 0.2, 0.0, 1.1]), torch.tensor([1.0, 0.5, 0.0, 0.8]),
                                torch.tensor([0, 0, 0, 0]), torch.tensor([True, True, False, True]), mode="mean_norm")
    approx(adv.execution.tolist(), [0.5, -0.4, -0.6, 0.5])
    m = (1.0 + 0.5 + 0.8) / 3
    approx(adv.schema.tolist(), [1.0 - m, 0.5 - m, 0.0, 0.8 - m])


def test_tracks_mean_std_norm_use_their_own_std():
    # execution: deviations [0.5, -0.4, -0.6, 0.5], unbiased var (0.25 + 0.16 + 0.36 + 0.25) / 3 = 0.34
    # schema proposers [1.0, 0.5, 0.8]: deviations [0.2333, -0.2667, 0.0333], var 0.12667 / 2
    adv = dual_track_advantages(torch.tensor([1.1, 0.2, 0.0, 1.1]), torch.tensor([1.0, 0.5, 0.0, 0.8]),
                                torch.tensor([0, 0, 0, 0]), torch.tensor([True, True, False, True]))
    s_e = math.sqrt(0.34)
    approx(adv.execution.tolist(), [0.5 / (s_e + EPS), -0.4 / (s_e + EPS), -0.6 / (s_e + EPS), 0.5 / (s_e + EPS)],
           tol=1e-6)
    m = 2.3 / 3
    devs = [1.0 - m, 0.5 - m, 0.8 - m]
    s_s = math.sqrt(sum(d * d for d in devs) / 2)
    approx(adv.schema.tolist(), [devs[0] / (s_s + EPS), devs[1] / (s_s + EPS), 0.0, devs[2] / (s_s + EPS)], tol=1e-6)


def test_constant_group_gives_zero_advantage_on_both_tracks():
    adv = dual_track_advantages(torch.tensor([0.2, 0.2, 0.2]), torch.tensor([0.4, 0.4, 0.4]),
                                torch.tensor([0, 0, 0]), torch.tensor([True, True, True]))
    assert adv.execution.tolist() == [0.0, 0.0, 0.0]
    assert adv.schema.tolist() == [0.0, 0.0, 0.0]
    assert summed_grpo_advantages(torch.tensor([0.2, 0.2, 0.2]), torch.tensor([0.4, 0.4, 0.4]),
                                  torch.tensor([0, 0, 0])).tolist() == [0.0, 0.0, 0.0]


def test_a_lone_proposer_and_no_proposer_get_no_exploration_signal():
    # group 0: only episode 0 proposed -> a group of one -> 0; group 1: nobody proposed -> 0
    adv = dual_track_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0.9, 0.0, 0.0, 0.0]),
                                torch.tensor([0, 0, 1, 1]), torch.tensor([True, False, False, False]), mode="mean_norm")
    assert adv.schema.tolist() == [0.0, 0.0, 0.0, 0.0]
    approx(adv.execution.tolist(), [0.5, -0.5, 0.5, -0.5])


def test_groups_do_not_mix():
    # group 0 proposers [1, 0] -> [0.5, -0.5]; group 1 proposers [0.2, 0.6] -> [-0.2, 0.2]
    adv = dual_track_advantages(torch.zeros(4), torch.tensor([1.0, 0.2, 0.0, 0.6]), torch.tensor([0, 1, 0, 1]),
                                torch.tensor([True, True, True, True]), mode="mean_norm")
    approx(adv.schema.tolist(), [0.5, -0.2, -0.5, 0.2])


def test_summed_grpo_is_one_advantage_of_the_sum():
    # sums [2.1, 0.7, 0.0, 1.9] (no-proposal schema already 0): mean 1.175
    got = summed_grpo_advantages(torch.tensor([1.1, 0.2, 0.0, 1.1]), torch.tensor([1.0, 0.5, 0.0, 0.8]),
                                 torch.tensor([0, 0, 0, 0]), mode="mean_norm")
    approx(got.tolist(), [2.1 - 1.175, 0.7 - 1.175, -1.175, 1.9 - 1.175])


def test_prefix_steps_is_inclusive_and_empty_without_a_proposal():
    t = torch.tensor([0, 1, 2, 3, 0, 1])
    boundary = torch.tensor([2, 2, 2, 2, -1, -1])
    assert prefix_steps(t, boundary).tolist() == [True, True, True, False, False, False]


def test_loss_by_hand_at_ratio_one():
    # ratio 1 everywhere, so each token's clipped loss is -A.
    # execution track over all 6 tokens: -(1 * 3 + (-1) * 3) / 6 = 0
    # exploration track over the prefix (row 0, tokens 0-1): -(2 + 2) / 2 = -2;  L = 0.25 * -2 = -0.5
    lp = torch.zeros(2, 3, requires_grad=True)
    out = dual_track_loss(lp, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.0]),
                          torch.ones(2, 3, dtype=torch.bool),
                          torch.tensor([[True, True, False], [False, False, False]]))
    assert float(out.loss.detach()) == pytest.approx(-0.5)
    assert out.parts["exec_loss"] == pytest.approx(0.0)
    assert out.parts["schema_loss"] == pytest.approx(-2.0)
    assert out.parts["prefix_fraction"] == pytest.approx(2 / 6)


def test_decoupled_clip_bounds():
    # log-ratio log(1.5), A = 1 > 0: clipped at 1 + 0.28 -> token loss -1.28 and no gradient;
    # log-ratio log(0.5), A = -1 < 0: clipped at 1 - 0.2 -> token loss +0.8 and no gradient
    lp = torch.tensor([[math.log(1.5), math.log(0.5)]], requires_grad=True)
    out = dual_track_loss(lp, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.zeros(1, 2),
                          torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.bool))
    assert float(out.loss.detach()) == pytest.approx((-1.28 + 0.8) / 2)
    out.loss.backward()
    assert lp.grad.abs().sum() == 0


def test_weight_zero_equals_standard_grpo_on_the_execution_reward():
    torch.manual_seed(0)
    lp = torch.randn(3, 5) * 0.1
    old = lp.detach() + torch.randn(3, 5) * 0.2
    mask = torch.rand(3, 5) > 0.2
    prefix = torch.rand(3, 5) > 0.5
    rewards = torch.tensor([1.1, 0.2, 0.0])
    gi = torch.zeros(3, dtype=torch.long)
    grpo_adv = group_relative_advantages(rewards, gi).float()
    dual = dual_track_advantages(rewards, torch.tensor([0.9, 0.1, 0.3]), gi, torch.ones(3, dtype=torch.bool))
    a = lp.clone().requires_grad_(True)
    b = lp.clone().requires_grad_(True)
    got = dual_track_loss(a, old, dual.execution.float(), dual.schema.float(), mask, prefix, schema_weight=0.0).loss
    want = ppo_clip_loss(b, old, grpo_adv, mask, clip_low=0.2, clip_high=0.28)
    assert torch.equal(got, want)
    got.backward()
    want.backward()
    assert torch.equal(a.grad, b.grad)


def test_changing_only_the_exploration_reward_changes_only_prefix_tokens():
    torch.manual_seed(1)
    lp = torch.randn(4, 6) * 0.1
    old = lp.detach() + torch.randn(4, 6) * 0.05
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[:, 0] = False                                   # a prompt token
    step_t = torch.tensor([[0, 0, 1, 1, 2, 2]] * 4)       # two tokens per step
    boundary = torch.tensor([1, 0, -1, 2])[:, None]       # proposal step per episode
    prefix = prefix_steps(step_t, boundary)
    gi = dense_group_index(["g"] * 4)
    has = boundary[:, 0] >= 0
    ex = torch.tensor([1.1, 0.2, 0.0, 1.0])
    grads = []
    for schema in (torch.tensor([0.9, 0.1, 0.0, 0.4]), torch.tensor([0.2, 0.8, 0.0, 1.0])):
        adv = dual_track_advantages(ex, schema, gi, has)
        x = lp.clone().requires_grad_(True)
        dual_track_loss(x, old, adv.execution.float(), adv.schema.float(), mask, prefix).loss.backward()
        grads.append(x.grad)
    changed = grads[0] != grads[1]
    assert bool(changed.any())
    assert not bool((changed & ~(prefix & mask)).any())


def test_no_prefix_token_adds_exactly_nothing():
    lp = torch.zeros(1, 3, requires_grad=True)
    with_w = dual_track_loss(lp, torch.zeros(1, 3), torch.tensor([1.0]), torch.tensor([5.0]),
                             torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool))
    without = dual_track_loss(lp, torch.zeros(1, 3), torch.tensor([1.0]), torch.tensor([5.0]),
                              torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool), schema_weight=0.0)
    assert float(with_w.loss.detach()) == float(without.loss.detach())


def test_frame_adds_both_tracks_and_the_summed_baseline():
    eps = pl.DataFrame({"episode_id": ["a", "b", "c", "d"], "group": ["g", "g", "g", "g"],
                        "execution_reward": [1.1, 0.2, 0.0, 1.1], "schema_reward": [1.0, 0.5, 0.7, 0.8],
                        "proposal_step": [3, 2, -1, 4]})
    out = dual_track_frame(eps, mode="mean_norm")
    approx(out["exec_advantage"].to_list(), [0.5, -0.4, -0.6, 0.5])
    m = 2.3 / 3
    approx(out["schema_advantage"].to_list(), [1.0 - m, 0.5 - m, 0.0, 0.8 - m])
    # the summed reward counts no schema reward without a proposal (c: 0.0 + 0, not 0.7)
    approx(out["grpo_advantage"].to_list(), [2.1 - 1.175, 0.7 - 1.175, -1.175, 1.9 - 1.175])
    with pytest.raises(ValueError, match="lacks column"):
        dual_track_frame(eps.drop("proposal_step"))

"""GRPO, DAPO and PGPO (the table track's objectives) on hand-computed vectors."""

from __future__ import annotations

import math

import pytest
import torch

from distillery.train.advantages import (
    length_balanced_groups,
    mixed_groups,
    process_gated_rewards,
    soft_overlong_penalty,
)
from distillery.train.losses import dapo_loss, grpo_loss, pgpo_loss, sequence_token_mean

MASK = torch.tensor([[True, True, True], [True, False, False]])


def test_sequence_token_mean_weighs_sequences_not_tokens():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
    assert sequence_token_mean(v, MASK).item() == pytest.approx(3.0)          # (2 + 4) / 2
    empty = sequence_token_mean(v.requires_grad_(), torch.zeros_like(MASK))
    assert empty.item() == 0.0 and empty.requires_grad


def test_grpo_and_dapo_aggregate_differently_on_policy():
    lp = torch.zeros(2, 3)
    adv = torch.tensor([2.0, -1.0])
    # ratio 1: token loss is -A; GRPO: rows -2 and +1 -> -0.5; DAPO: (3 * -2 + 1) / 4 = -1.25
    assert grpo_loss(lp, lp, adv, MASK).item() == pytest.approx(-0.5)
    assert dapo_loss(lp, lp, adv, MASK).item() == pytest.approx(-1.25)
    assert pgpo_loss(lp, lp, adv, MASK).item() == pytest.approx(-1.25)


def test_clip_higher_lets_positive_tokens_rise_further():
    m = torch.ones(1, 1, dtype=torch.bool)
    up = torch.full((1, 1), math.log(1.5))
    zero = torch.zeros(1, 1)
    # ratio 1.5, A = +1: GRPO clips at 1.2, DAPO/PGPO at 1.28, PGPO without clip-higher at 1.2
    assert grpo_loss(up, zero, torch.tensor([1.0]), m).item() == pytest.approx(-1.2)
    assert dapo_loss(up, zero, torch.tensor([1.0]), m).item() == pytest.approx(-1.28)
    assert pgpo_loss(up, zero, torch.tensor([1.0]), m, clip_high=0.2).item() == pytest.approx(-1.2)
    # ratio 0.5, A = -1: both clip low at 0.8 -> loss max(0.5, 0.8) = 0.8
    down = torch.full((1, 1), math.log(0.5))
    assert grpo_loss(down, zero, torch.tensor([-1.0]), m).item() == pytest.approx(0.8)
    assert dapo_loss(down, zero, torch.tensor([-1.0]), m).item() == pytest.approx(0.8)


def test_soft_overlong_penalty():
    got = soft_overlong_penalty(torch.tensor([10, 15, 16, 20, 21]), max_length=20, cache=5)
    assert got.tolist() == pytest.approx([0.0, 0.0, -0.2, -1.0, -1.0])
    with pytest.raises(ValueError, match="cache"):
        soft_overlong_penalty(torch.tensor([1]), max_length=4, cache=5)


def test_mixed_groups_keep_only_groups_with_both_outcomes():
    values = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    assert mixed_groups(values, groups).tolist() == [True, True, False, False, False, False, False]
    # gated rewards: a group of right answers with different processes is mixed
    assert mixed_groups(torch.tensor([1.0, 0.0, 0.05]), torch.tensor([0, 0, 0])).tolist() == [True] * 3


def test_process_gated_rewards():
    outcome = torch.tensor([1.0, 1.0, 0.0, 0.0])
    steps = [[1, 1, 1], [1, 0, 1], [1, 1, 0, 0], [0.9, 0.2]]
    got = process_gated_rewards(outcome, steps, gate="min", prefix_credit=0.1)
    # right+valid 1; right with an invalid step 0; wrong: 0.1 x (2/4) and 0.1 x (1/2)
    assert got.tolist() == pytest.approx([1.0, 0.0, 0.05, 0.05])
    one = torch.tensor([1.0])
    cov = torch.tensor([0.5])
    assert process_gated_rewards(one, [[0.9, 0.8]], coverage=cov, gate="min").item() == pytest.approx(0.4)
    assert process_gated_rewards(one, [[0.9, 0.8]], coverage=cov, gate="product").item() == pytest.approx(0.36)
    with pytest.raises(ValueError, match="step scores"):
        process_gated_rewards(outcome, steps[:2])


def test_length_balanced_groups_round_robin_over_lengths():
    assert length_balanced_groups([3, 3, 3, 5, 7, 7], 4) == [0, 1, 3, 4]
    assert length_balanced_groups([3, 3], 5) == [0, 1]
    assert length_balanced_groups([], 3) == []

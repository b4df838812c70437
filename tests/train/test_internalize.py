"""Pieces of the internalization loop (train.internalize); the loop itself runs in the
end-to-end pipeline test on the micro configuration."""

from __future__ import annotations

import pytest
import torch

from distillery.lm.model import ModelConfig, build_model
from distillery.rollout import Trajectories
from distillery.train.data import Example, collate
from distillery.train.internalize import (
    InternalizeConfig,
    _with_flags,
    onpolicy_loss_fn,
    update_experience,
)
from distillery.types import Experience, episodes_to_frame, steps_to_frame


def test_config_rejects_unknown_cells():
    with pytest.raises(ValueError, match="granularity"):
        InternalizeConfig(granularity="skill")
    with pytest.raises(ValueError, match="injection"):
        InternalizeConfig(injection="sometimes")
    with pytest.raises(ValueError, match="regime"):
        InternalizeConfig(regime="offline")
    assert InternalizeConfig().train.max_steps > 0


@pytest.mark.parametrize("granularity", ["principle", "instance"])
def test_an_update_from_nothing_useful_keeps_the_pool(granularity):
    pool = [Experience("p1", "principle", "Invoices go in finance/invoices/.", status="active", counter=2)]
    empty = Trajectories(episodes_to_frame([]), steps_to_frame([]))
    new, messages = update_experience(pool, granularity, {}, empty, max_rules=20)
    assert [e.to_dict() for e in new] == [e.to_dict() for e in pool]
    assert messages and all(isinstance(m, str) for m in messages)


def test_onpolicy_loss_is_zero_advantage_when_teacher_agrees_and_likelihood_on_replay():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=16, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=32,
                                    vocab_size=20))
    ids = [3, 4, 5, 6, 7, 8]
    labels = [-100, -100, -100, 6, 7, 8]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    tok_lp = [0.0, 0.0, 0.0] + [float(logp[t - 1, ids[t]]) for t in range(3, 6)]
    agree = Example(ids, labels, {"sampler_logp": tok_lp, "teacher_logp": tok_lp})
    distil = _with_flags([agree], True)
    replay = _with_flags([Example(ids, labels)], False)
    loss_d, stats = onpolicy_loss_fn(model, collate(distil, pad_id=0))
    assert abs(loss_d.item()) < 1e-6 and abs(stats["reverse_kl"]) < 1e-6
    loss_r, _ = onpolicy_loss_fn(model, collate(replay, pad_id=0))
    expected_nll = -sum(tok_lp[3:]) / 3
    assert loss_r.item() == pytest.approx(expected_nll, rel=1e-5)
    # A teacher that prefers the sampled tokens more than the student pushes them up:
    # the loss's gradient raises their log-probs.
    keen = _with_flags([Example(ids, labels, {"sampler_logp": tok_lp,
                                              "teacher_logp": [v + 1.0 if i >= 3 else 0.0
                                                               for i, v in enumerate(tok_lp)]})], True)
    loss_k, stats_k = onpolicy_loss_fn(model, collate(keen, pad_id=0))
    assert stats_k["reverse_kl"] == pytest.approx(-1.0, abs=1e-5)
    loss_k.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-2 * p.grad
        after = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    assert sum(float(after[t - 1, ids[t]]) for t in range(3, 6)) > sum(tok_lp[3:])

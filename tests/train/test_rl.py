"""Pieces of the RL loop (train.rl) against hand-computed values; the loop itself runs in
the end-to-end pipeline test on the micro configuration."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from distillery.lm.model import ModelConfig, build_model
from distillery.train.data import Example, collate
from distillery.train.rl import (
    RLConfig,
    learning_slice,
    rl_loss_fn,
    score_examples,
    shaped_rewards,
    skip_reason,
    step_advantages,
    update_skills,
    with_logprobs,
)
from distillery.types import Experience, Task


def _episodes(rows):
    return pl.DataFrame(rows, schema={"episode_id": pl.String, "group": pl.String, "success": pl.Boolean,
                                      "injected": pl.List(pl.String)}, orient="row")


def _steps(rows):
    return pl.DataFrame(rows, schema={"episode_id": pl.String, "t": pl.Int64, "observation": pl.String,
                                      "valid": pl.Boolean, "reward": pl.Float64}, orient="row")


def test_shaped_rewards_put_the_penalty_on_invalid_steps_and_success_on_the_last():
    eps = _episodes([("a", "g", True, []), ("b", "g", False, [])])
    st = _steps([("a", 0, "o0", False, 0.0), ("a", 1, "o1", True, 0.0), ("b", 0, "o0", True, 0.0)])
    e, s = shaped_rewards(eps, st, 0.1)
    assert dict(e.select("episode_id", "reward").iter_rows()) == pytest.approx({"a": 0.9, "b": 0.0})
    got = {(r["episode_id"], r["t"]): r["reward"] for r in s.iter_rows(named=True)}
    assert got == pytest.approx({("a", 0): -0.1, ("a", 1): 1.0, ("b", 0): 0.0})


def test_grpo_broadcasts_the_episode_advantage_and_an_all_equal_group_gets_zero():
    cfg = RLConfig(grpo_mode="mean_norm")
    eps = _episodes([("a", "g1", True, []), ("b", "g1", False, []), ("c", "g2", True, []), ("d", "g2", True, [])])
    st = _steps([("a", 0, "x", True, 0), ("a", 1, "y", True, 0), ("b", 0, "x", True, 0),
                 ("c", 0, "x", True, 0), ("d", 0, "x", True, 0)])
    e, s = shaped_rewards(eps, st, 0.1)
    adv = {(r[0], r[1]): r[2] for r in step_advantages("grpo", e, s, cfg).iter_rows()}
    # g1: rewards 1, 0 -> mean 0.5 -> +0.5 / -0.5 on every step; g2 all equal -> 0
    assert adv == pytest.approx({("a", 0): 0.5, ("a", 1): 0.5, ("b", 0): -0.5, ("c", 0): 0.0, ("d", 0): 0.0})


def test_gigpo_adds_the_anchor_state_step_advantage():
    cfg = RLConfig(gamma=0.5, step_weight=1.0, gigpo_mode="mean_norm")
    # a: x -> y (success at t=1); b: x (fails at t=0). Anchor x holds a@0 and b@0.
    eps = _episodes([("a", "g", True, []), ("b", "g", False, [])])
    st = _steps([("a", 0, "x", True, 0), ("a", 1, "y", True, 0), ("b", 0, "x", True, 0)])
    e, s = shaped_rewards(eps, st, 0.1)
    adv = {(r[0], r[1]): r[2] for r in step_advantages("gigpo", e, s, cfg).iter_rows()}
    # episode: +0.5 / -0.5. Returns: a@0 = 0.5 * 1 = 0.5, a@1 = 1, b@0 = 0.
    # anchor x: mean 0.25 -> a@0 +0.25, b@0 -0.25; y is a singleton -> 0.
    assert adv == pytest.approx({("a", 0): 0.75, ("a", 1): 0.5, ("b", 0): -0.75})


def test_a_batch_without_valid_actions_or_without_signal_is_skipped_with_a_reason():
    ex = [Example([1, 2, 3], [-100, 2, 3], {"advantage": 0.0, "pg": 1.0})]
    no_valid = _steps([("a", 0, "x", False, 0), ("b", 0, "x", False, 0)])
    assert "no valid action" in skip_reason(no_valid, ex, [])
    flat = _steps([("a", 0, "x", True, 0)])
    assert "non-zero advantage" in skip_reason(flat, ex, [])
    signal = [Example([1, 2, 3], [-100, 2, 3], {"advantage": 0.3, "pg": 1.0})]
    assert skip_reason(flat, signal, []) is None
    assert skip_reason(_steps([]), ex, []) is not None


def _tiny():
    torch.manual_seed(0)
    return build_model(ModelConfig(hidden_size=16, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=32,
                                   vocab_size=20))


def test_rl_loss_is_zero_on_policy_with_zero_advantage_and_ascends_a_positive_one():
    model = _tiny()
    cfg = RLConfig(temperature=0.7, kl_coef=0.01)
    ids, labels = [3, 4, 5, 6, 7, 8], [-100, -100, -100, 6, 7, 8]
    base = [Example(ids, labels, {"advantage": 0.0, "pg": 1.0})]
    lp = score_examples(model, base, temperature=0.7, pad_id=0)
    batch = collate(with_logprobs(base, lp, lp), pad_id=0)
    loss, parts = rl_loss_fn(cfg, 0.0)(model, batch)
    assert abs(loss.item()) < 1e-6 and abs(parts["kl"]) < 1e-6
    # A positive advantage: one gradient step raises the sampled tokens' log-probs.
    pos = collate(with_logprobs([Example(ids, labels, {"advantage": 1.0, "pg": 1.0})], lp, lp), pad_id=0)
    loss, _ = rl_loss_fn(cfg, 0.0)(model, pos)
    assert loss.item() == pytest.approx(-1.0, abs=1e-5)       # -A * ratio, ratio 1
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.05 * p.grad
    after = score_examples(model, base, temperature=0.7, pad_id=0)[0]
    assert sum(after[3:]) > sum(lp[0][3:])


def test_siri_internalization_rows_add_lambda_times_the_gated_likelihood():
    model = _tiny()
    cfg = RLConfig(temperature=1.0, siri_weight_clip=1.0)
    ids, labels = [3, 4, 5, 6, 7, 8], [-100, -100, -100, 6, 7, 8]
    pg = Example(ids, labels, {"advantage": 0.0, "pg": 1.0})
    internal = Example(ids, labels, {"advantage": 2.0, "pg": 0.0})     # weight clip(2, 0, 1) = 1
    lp = score_examples(model, [pg], temperature=1.0, pad_id=0)
    batch = collate(with_logprobs([pg], lp, lp) + with_logprobs([internal], None, None), pad_id=0)
    loss, parts = rl_loss_fn(cfg, 0.5)(model, batch)
    nll = -sum(lp[0][3:]) / 3
    assert parts["internalization"] == pytest.approx(nll, rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * nll, rel=1e-5)


def test_update_skills_records_the_paired_treatment_effect():
    sk = Experience("s1", "skill", "do x", condition="the task ...", family="f", status="candidate")
    eps = pl.DataFrame({"group": ["g"] * 4, "injected": [["s1"], ["s1"], [], []], "reward": [1.0, 1.0, 0.0, 1.0]},
                       schema={"group": pl.String, "injected": pl.List(pl.String), "reward": pl.Float64})
    (new,), _ = update_skills([sk], eps)
    assert new.trials == 1 and new.utility == pytest.approx(0.5)      # 1.0 - 0.5


def test_learning_slice_takes_a_different_slice_each_iteration_and_wraps():
    tasks = [Task(task_id=f"f-{i}", family="f", split="heldout_train", profile="h01", hint="", instruction="",
                  initial_state={}, reference_solution=[], checks=[]) for i in range(5)]
    ids = [[t.task_id for t in learning_slice(tasks, 2, it)] for it in range(3)]
    assert ids == [["f-0", "f-1"], ["f-2", "f-3"], ["f-4", "f-0"]]


def test_config_rejects_a_group_of_one_and_unknown_methods():
    with pytest.raises(ValueError, match="method"):
        RLConfig(method="ppo")
    with pytest.raises(ValueError, match="k >= 2"):
        RLConfig(k=1)

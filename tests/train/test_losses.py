"""Training objectives against numbers worked out by hand (arithmetic in the comments).

Expected values are computed with `math` on scalars, never by calling the function under
test; tensors are float64 so comparisons can be tight.
"""

from __future__ import annotations

import math

import pytest
import torch

from distillery.train.losses import (
    IGNORE_INDEX,
    ScopeWeights,
    aopd_loss,
    dpo_loss,
    generalized_jsd_loss,
    importance_sampling_loss,
    linear_warmup,
    low_var_kl,
    low_var_kl_loss,
    masked_token_mean,
    opd_advantages,
    opd_loss,
    ppo_clip_fraction,
    ppo_clip_loss,
    scope_loss,
    scope_path_weights,
    sequence_mean_logprob,
    siri_internalization_loss,
    teacher_coverage,
    token_logprobs,
    topk_reverse_kl,
)

LN = math.log
NAN = float("nan")


def t(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def mask_of(x):
    return torch.tensor(x, dtype=torch.bool)


def assert_close(got: torch.Tensor, expected) -> None:
    torch.testing.assert_close(got.detach().to(torch.float64), t(expected), rtol=1e-9, atol=1e-12)


def assert_zero_with_grad_path(loss, *leaves):
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


# --- shared pieces ---------------------------------------------------------------------------


def test_token_logprobs_and_ignored_positions():
    # logits [0, ln 3] -> p = [1/4, 3/4]
    logits = t([[[0.0, LN(3)], [0.0, LN(3)]]])
    labels = torch.tensor([[1, IGNORE_INDEX]])
    assert_close(token_logprobs(logits, labels), [[LN(0.75), 0.0]])


def test_masked_token_mean_ignores_masked_values_even_inf():
    # (1 + 2) / 2; the masked inf must not leak
    assert masked_token_mean(t([[1.0, 2.0, math.inf]]), mask_of([[1, 1, 0]])).item() == 1.5


def test_masked_token_mean_empty_mask_is_zero_with_grad_path():
    values = t([[3.0, 4.0]], grad=True)
    assert_zero_with_grad_path(masked_token_mean(values * 2, mask_of([[0, 0]])), values)
    assert values.grad.tolist() == [[0.0, 0.0]]


# --- PPO-clip --------------------------------------------------------------------------------

# ratios r = [1.1, 1.5, 0.5, 0.9], advantages [1, 1, -1, -2], clip_low 0.2, clip_high 0.28
RATIOS = [1.1, 1.5, 0.5, 0.9]
ADVS = [1.0, 1.0, -1.0, -2.0]


def _ppo_inputs():
    sampler = t([[LN(0.5)] * 4])
    logprobs = t([[LN(0.5 * r) for r in RATIOS]], grad=True)
    return logprobs, sampler, t([ADVS]), mask_of([[1, 1, 1, 1]])


def test_ppo_clip_loss_by_hand_with_decoupled_bounds():
    logprobs, sampler, adv, mask = _ppo_inputs()
    loss = ppo_clip_loss(logprobs, sampler, adv, mask, clip_low=0.2, clip_high=0.28)
    # token 0: min(1.1 * 1, 1.1 * 1)          = 1.1   -> -1.1
    # token 1: min(1.5 * 1, 1.28 * 1)         = 1.28  -> -1.28 (clipped by clip_high)
    # token 2: min(0.5 * -1, 0.8 * -1)        = -0.8  -> 0.8   (clipped by clip_low)
    # token 3: min(0.9 * -2, 0.9 * -2)        = -1.8  -> 1.8
    expected = (-1.1 - 1.28 + 0.8 + 1.8) / 4
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    # d(-A r)/d log pi = -A r, over N = 4 tokens; clipped tokens give exactly 0
    assert logprobs.grad.tolist()[0] == pytest.approx([-1.1 / 4, 0.0, 0.0, 2 * 0.9 / 4])
    assert ppo_clip_fraction(logprobs, sampler, adv, mask, clip_low=0.2, clip_high=0.28) == 0.5


def test_ppo_gradient_sign_raises_good_tokens_and_lowers_bad_ones():
    sampler = t([[LN(0.5), LN(0.5)]])
    logprobs = t([[LN(0.5), LN(0.5)]], grad=True)
    ppo_clip_loss(logprobs, sampler, t([[2.0, -3.0]]), mask_of([[1, 1]])).backward()
    # on-policy r = 1: gradient -A / N -> descent raises the A > 0 token, lowers the other
    assert logprobs.grad.tolist()[0] == pytest.approx([-1.0, 1.5])


def test_ppo_low_ratio_with_positive_advantage_is_not_clipped():
    # r = 0.5 < 1 - 0.2 with A = 1: min(0.5, 0.8) = 0.5 is the unclipped term, gradient flows
    logprobs = t([[LN(0.25)]], grad=True)
    loss = ppo_clip_loss(logprobs, t([[LN(0.5)]]), t([[1.0]]), mask_of([[1]]))
    assert loss.item() == pytest.approx(-0.5)
    loss.backward()
    assert logprobs.grad.item() == pytest.approx(-0.5)


def test_ppo_masked_tool_output_tokens_do_not_affect_loss_or_grad():
    sampler = t([[LN(0.5), LN(0.5), LN(0.5)]])
    logprobs = t([[LN(0.5), LN(0.9), LN(0.5)]], grad=True)
    mask = mask_of([[1, 0, 1]])  # the middle token is tool output
    loss_a = ppo_clip_loss(logprobs, sampler, t([[1.0, 1000.0, 1.0]]), mask)
    loss_b = ppo_clip_loss(logprobs, sampler, t([[1.0, -7.0, 1.0]]), mask)
    # (-1 - 1) / 2 both times: the masked token neither counts nor is averaged over
    assert loss_a.item() == loss_b.item() == pytest.approx(-1.0)
    loss_a.backward()
    assert logprobs.grad[0, 1].item() == 0.0


def test_ppo_sequence_advantages_broadcast_over_tokens():
    sampler = t([[LN(0.5), LN(0.5)], [LN(0.5), LN(0.5)]])
    loss = ppo_clip_loss(sampler.clone(), sampler, t([1.0, -3.0]), mask_of([[1, 1], [1, 0]]))
    # tokens: -1, -1, +3 (the last is masked) -> (-1 - 1 + 3) / 3
    assert loss.item() == pytest.approx(1 / 3)


def test_importance_sampling_loss_by_hand():
    # r = [2, 0.5], A = [1, -1]: -A r = [-2, 0.5] -> mean -0.75 (no clipping here)
    loss = importance_sampling_loss(
        t([[LN(0.5), LN(0.125)]]), t([[LN(0.25), LN(0.25)]]), t([[1.0, -1.0]]), mask_of([[1, 1]])
    )
    assert loss.item() == pytest.approx(-0.75)


# --- low_var_kl ------------------------------------------------------------------------------


def test_low_var_kl_by_hand_and_clamps():
    # d = ln 0.25 - ln 0.5 = ln 0.5: k3 = 0.5 - ln 0.5 - 1 = 0.19314...
    k3 = low_var_kl(t([[LN(0.5), LN(0.3), 0.0, -30.0]]), t([[LN(0.25), LN(0.3), -30.0, 0.0]]))
    assert k3[0, 0].item() == pytest.approx(0.5 - LN(0.5) - 1)
    assert k3[0, 1].item() == 0.0  # same log-prob, no divergence
    # d = -30 is clamped to -20: e^-20 + 20 - 1 = 19.000000002 -> clamped to 10
    assert k3[0, 2].item() == 10.0
    # d = +30 -> 20: e^20 - 21 is huge -> clamped to 10
    assert k3[0, 3].item() == 10.0


def test_low_var_kl_loss_token_mean_over_mask():
    loss = low_var_kl_loss(t([[LN(0.5), 0.0]]), t([[LN(0.25), -30.0]]), mask_of([[1, 0]]))
    assert loss.item() == pytest.approx(0.5 - LN(0.5) - 1)


# --- GKD generalized JSD -----------------------------------------------------------------------

# one labelled position, vocabulary of 2: p_S = [1/2, 1/2], p_T = [3/4, 1/4]
STUDENT = [[[0.0, 0.0]]]
TEACHER = [[[LN(3), 0.0]]]
LABELS = torch.tensor([[0]])


def kl(p, q):
    return sum(pi * LN(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_jsd_beta_zero_is_forward_kl():
    loss = generalized_jsd_loss(t(STUDENT), t(TEACHER), LABELS, beta=0.0)
    # KL(p_T || p_S) = 0.75 ln(0.75 / 0.5) + 0.25 ln(0.25 / 0.5)
    assert loss.item() == pytest.approx(0.75 * LN(1.5) + 0.25 * LN(0.5))


def test_jsd_beta_one_is_reverse_kl():
    loss = generalized_jsd_loss(t(STUDENT), t(TEACHER), LABELS, beta=1.0)
    # KL(p_S || p_T) = 0.5 ln(0.5 / 0.75) + 0.5 ln(0.5 / 0.25)
    assert loss.item() == pytest.approx(0.5 * LN(0.5 / 0.75) + 0.5 * LN(2.0))


def test_jsd_mixture_by_hand():
    beta = 0.5
    loss = generalized_jsd_loss(t(STUDENT), t(TEACHER), LABELS, beta=beta)
    # M = 0.5 * [0.75, 0.25] + 0.5 * [0.5, 0.5] = [0.625, 0.375]
    m = [0.625, 0.375]
    expected = beta * kl([0.75, 0.25], m) + (1 - beta) * kl([0.5, 0.5], m)
    assert loss.item() == pytest.approx(expected)
    # beta = 0.9: M = [0.9 * 0.75 + 0.1 * 0.5, 0.9 * 0.25 + 0.1 * 0.5] = [0.725, 0.275]
    loss9 = generalized_jsd_loss(t(STUDENT), t(TEACHER), LABELS, beta=0.9)
    m9 = [0.725, 0.275]
    assert loss9.item() == pytest.approx(0.9 * kl([0.75, 0.25], m9) + 0.1 * kl([0.5, 0.5], m9))


def test_jsd_temperature_softens_both_sides():
    loss = generalized_jsd_loss(t(STUDENT), t(TEACHER), LABELS, beta=0.0, temperature=2.0)
    # teacher logits / 2 = [ln 3 / 2, 0] -> p_T = [sqrt3, 1] / (sqrt3 + 1); p_S stays uniform
    s3 = math.sqrt(3)
    p_t = [s3 / (s3 + 1), 1 / (s3 + 1)]
    assert loss.item() == pytest.approx(kl(p_t, [0.5, 0.5]))


def test_jsd_ignores_unlabelled_positions_and_gives_teacher_no_gradient():
    student = t([[[0.0, 0.0], [5.0, -5.0]]], grad=True)
    teacher = t([[[LN(3), 0.0], [-5.0, 5.0]]], grad=True)
    labels = torch.tensor([[0, IGNORE_INDEX]])
    loss = generalized_jsd_loss(student, teacher, labels, beta=0.0)
    assert loss.item() == pytest.approx(0.75 * LN(1.5) + 0.25 * LN(0.5))
    loss.backward()
    assert student.grad[0, 1].abs().sum().item() == 0.0
    assert teacher.grad is None
    # forward KL gradient wrt student logits: p_S - p_T = [0.5 - 0.75, 0.5 - 0.25]
    assert student.grad[0, 0].tolist() == pytest.approx([-0.25, 0.25])


def test_jsd_rejects_beta_outside_unit_interval():
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd_loss(t(STUDENT), t(TEACHER), LABELS, beta=1.5)


# --- teacher coverage ------------------------------------------------------------------------


def test_teacher_coverage_skips_rows_with_missing_teacher_on_action_tokens_only():
    teacher = t([[LN(0.5), NAN], [NAN, LN(0.5)], [LN(0.5), LN(0.5)]])
    mask = mask_of([[1, 0], [1, 1], [1, 1]])  # row 0's NaN sits on a non-action token
    cov = teacher_coverage(teacher, mask)
    assert cov.has_teacher.tolist() == [True, False, True]
    assert cov.skipped_rows == 1
    assert cov.mask.tolist() == [[True, False], [False, False], [True, True]]
    assert torch.isfinite(cov.teacher_logprobs).all()
    assert "skipped 1 rollout" in cov.reason and "teacher" in cov.reason
    assert teacher_coverage(t([[0.0]]), mask_of([[1]])).reason == ""


# --- OPD ---------------------------------------------------------------------------------------


def test_opd_advantage_is_minus_reverse_kl_on_sampled_tokens():
    sampler = t([[LN(0.5), LN(0.25), LN(0.9)]])
    teacher = t([[LN(0.25), LN(0.5), LN(0.1)]])
    adv = opd_advantages(sampler, teacher, mask_of([[1, 1, 0]]), kl_coef=2.0)
    # k = [ln 0.5 - ln 0.25, ln 0.25 - ln 0.5] = [ln 2, -ln 2]; A = -2 k; masked token -> 0
    assert adv.advantages.tolist()[0] == pytest.approx([-2 * LN(2), 2 * LN(2), 0.0])
    assert adv.skipped_rows == 0


def test_opd_discount_sums_future_advantages_over_positions():
    sampler = t([[LN(0.5), LN(0.5), LN(0.5)]])
    teacher = t([[LN(0.25), LN(0.9), LN(1.0)]])
    adv = opd_advantages(sampler, teacher, mask_of([[1, 0, 1]]), discount=0.5)
    # raw A = -(ln 0.5 - teacher): [ln 0.25 - ln 0.5, (masked) 0, ln 1 - ln 0.5] = [-ln 2, 0, ln 2]
    # discounted: A2 = ln 2; A1 masked -> reported 0; A0 = -ln 2 + 0.5 * 0 + 0.25 * ln 2
    assert adv.advantages.tolist()[0] == pytest.approx([-0.75 * LN(2), 0.0, LN(2)])


def test_opd_loss_skips_rollout_with_failed_teacher_without_nan():
    logprobs = t([[LN(0.5), LN(0.5)], [LN(0.5), LN(0.5)]], grad=True)
    sampler = logprobs.detach().clone()
    teacher = t([[LN(0.25), LN(1.0)], [NAN, NAN]])
    out = opd_loss(logprobs, sampler, teacher, mask_of([[1, 1], [1, 1]]))
    # row 0 only: A = [-ln 2, +ln 2], on-policy r = 1 -> loss = -(A0 + A1) / 2 = 0
    assert out.skipped_rows == 1
    assert out.loss.item() == pytest.approx(0.0)
    out.loss.backward()
    # gradient -A / 2 on row 0; exactly zero (not NaN) on the skipped row
    assert_close(logprobs.grad, [[LN(2) / 2, -LN(2) / 2], [0.0, 0.0]])


# --- AOPD --------------------------------------------------------------------------------------


def test_topk_reverse_kl_renormalises_both_sides_on_teacher_support():
    # student p over V=3 from logits [0, ln 2, 5]; on the teacher's ids {0, 1}: [1/3, 2/3]
    # teacher top-2 log-probs [ln 0.4, ln 0.4] renormalised: [1/2, 1/2]
    d = topk_reverse_kl(t([[[0.0, LN(2), 5.0]]]), torch.tensor([[[0, 1]]]), t([[[LN(0.4), LN(0.4)]]]))
    assert d.item() == pytest.approx((1 / 3) * LN((1 / 3) / 0.5) + (2 / 3) * LN((2 / 3) / 0.5))


def test_aopd_reinforces_positive_tokens_and_pulls_the_rest_to_teacher():
    # token 0: teacher ln 0.8 > student ln 0.4 -> A = ln 2 > 0, reinforced (on-policy r = 1)
    # token 1: teacher ln 0.1 < student ln 0.4 -> A = -ln 4 <= 0, local divergence instead
    # token 2: tool output, masked
    logprobs = t([[LN(0.4), LN(0.4), LN(0.4)]], grad=True)
    logits = t([[[0.0, LN(2), 5.0]] * 3], grad=True)
    ids = torch.tensor([[[0, 1]] * 3])
    topk = t([[[LN(0.4), LN(0.4)]] * 3])
    out = aopd_loss(
        logprobs,
        logprobs.detach().clone(),
        t([[LN(0.8), LN(0.1), 50.0]]),
        logits,
        ids,
        topk,
        mask_of([[1, 1, 0]]),
        eta=2.0,
    )
    d_loc = (1 / 3) * LN((1 / 3) / 0.5) + (2 / 3) * LN((2 / 3) / 0.5)
    # L = (-A0 * 1 + eta * D_loc) / |T| with |T| = 2 action tokens
    assert out.loss.item() == pytest.approx((-LN(2) + 2.0 * d_loc) / 2)
    assert out.parts["positive_fraction"] == 0.5
    out.loss.backward()
    # positive token pushed up (-A0 / 2); the non-positive token is never pushed down
    assert logprobs.grad.tolist()[0] == pytest.approx([-LN(2) / 2, 0.0, 0.0])
    # the pull acts on the logits of token 1 only
    assert logits.grad[0, 1].abs().sum().item() > 0
    assert logits.grad[0, 0].abs().sum().item() == 0.0
    assert logits.grad[0, 2].abs().sum().item() == 0.0


def test_aopd_skips_rollout_with_failed_teacher():
    logprobs = t([[LN(0.4)], [LN(0.4)]], grad=True)
    logits = t([[[0.0, 1.0]], [[0.0, 1.0]]], grad=True)
    out = aopd_loss(
        logprobs,
        logprobs.detach().clone(),
        t([[LN(0.8)], [NAN]]),
        logits,
        torch.tensor([[[0, 1]], [[0, 1]]]),
        t([[[LN(0.5), LN(0.5)]], [[NAN, NAN]]]),
        mask_of([[1], [1]]),
    )
    # only row 0 remains: A = ln 0.8 - ln 0.4 = ln 2 > 0 -> loss = -ln 2 over 1 token
    assert out.skipped_rows == 1
    assert out.loss.item() == pytest.approx(-LN(2))
    out.loss.backward()
    assert torch.isfinite(logprobs.grad).all() and torch.isfinite(logits.grad).all()


# --- SCOPE -------------------------------------------------------------------------------------


def test_scope_weights_follow_the_paper_sign():
    # group 0: correct rows 0-2 with l_S = [ln .5, ln .25, ln .5] -> PPL_S = [2, 4, 2]
    #          wrong rows 3-4 with l_T = [ln .5, ln .125]        -> PPL_T = [2, 8]
    # group 1: one correct (row 5), one wrong (row 6)
    l_s = t([LN(0.5), LN(0.25), LN(0.5), -9.0, -9.0, LN(0.3), -9.0])
    l_t = t([-9.0, -9.0, -9.0, LN(0.5), LN(0.125), -9.0, LN(0.7)])
    correct = mask_of([1, 1, 1, 0, 0, 1, 0])
    groups = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    w = scope_path_weights(l_s, l_t, correct, groups, tau=1.0)
    # student: 3 * PPL / sum PPL = 3 * [2, 4, 2] / 8 (higher perplexity -> higher weight);
    # the lone correct answer of group 1 gets 1
    assert w.student.tolist() == pytest.approx([0.75, 1.5, 0.75, 0, 0, 1.0, 0])
    # teacher: 2 * PPL^-1 / sum PPL^-1 = 2 * [0.5, 0.125] / 0.625; lone wrong answer -> 1
    assert w.teacher.tolist() == pytest.approx([0, 0, 0, 1.6, 0.4, 0, 1.0])
    # mean 1 on each path within each group
    assert sum(w.student.tolist()[:3]) / 3 == pytest.approx(1.0)


def test_scope_weights_temperature():
    l_s = t([LN(0.5), LN(0.25)])
    w = scope_path_weights(l_s, t([0.0, 0.0]), mask_of([1, 1]), torch.tensor([0, 0]), tau=2.0)
    # PPL^(1/2) = [sqrt 2, 2] -> 2 * [sqrt 2, 2] / (sqrt 2 + 2)
    s2 = math.sqrt(2)
    assert w.student.tolist() == pytest.approx([2 * s2 / (s2 + 2), 4 / (s2 + 2)])


def test_scope_weights_leave_out_wrong_rows_without_teacher():
    l_t = t([LN(0.5), NAN, LN(0.25)])
    wrong = mask_of([0, 0, 0])
    w = scope_path_weights(t([0.0, 0.0, 0.0]), l_t, wrong, torch.tensor([0, 0, 0]))
    # the NaN row is dropped; {ln .5, ln .25}: PPL^-1 = [0.5, 0.25] -> 2 * [.5, .25] / .75
    assert w.teacher.tolist() == pytest.approx([4 / 3, 0.0, 2 / 3])
    w2 = scope_path_weights(
        t([0.0, 0.0, 0.0]), t([LN(0.5), LN(0.5), LN(0.25)]), wrong, torch.tensor([0, 0, 0]),
        has_teacher=mask_of([1, 0, 1]),
    )
    assert w2.teacher.tolist() == pytest.approx([4 / 3, 0.0, 2 / 3])


def test_sequence_mean_logprob():
    # (ln .5 + ln .25) / 2; an empty row gives 0
    out = sequence_mean_logprob(t([[LN(0.5), LN(0.25), 7.0], [1.0, 1.0, 1.0]]), mask_of([[1, 1, 0], [0, 0, 0]]))
    assert out.tolist() == pytest.approx([(LN(0.5) + LN(0.25)) / 2, 0.0])


def test_scope_loss_by_hand():
    # row 0 correct (w_stu 1), row 1 wrong (w_tea 2); on-policy (logprobs = old)
    logprobs = t([[LN(0.5), LN(0.5)], [LN(0.25), LN(0.5)]], grad=True)
    old = logprobs.detach().clone()
    teacher = t([[NAN, NAN], [LN(0.5), LN(0.5)]])  # a correct row needs no teacher
    weights = ScopeWeights(student=t([1.0, 0.0]), teacher=t([0.0, 2.0]))
    out = scope_loss(logprobs, old, teacher, mask_of([[1, 1], [1, 1]]), mask_of([1, 0]), weights)
    # wrong path: d = 2 * (teacher - old) = [2 ln 2, 0]; PG tokens -d * r = [-2 ln 2, 0];
    #   token mean over all 4 kept tokens (correct row adds 0): -2 ln 2 / 4
    # correct path: -1 * (ln .5 + ln .5) / 2 = ln 2
    assert out.skipped_rows == 0
    assert out.parts["wrong_path"] == pytest.approx(-2 * LN(2) / 4)
    assert out.parts["correct_path"] == pytest.approx(LN(2))
    assert out.loss.item() == pytest.approx(LN(2) - LN(2) / 2)
    out.loss.backward()
    # d/d logp: correct row -w_stu / 2 each; wrong row -d / 4
    assert_close(logprobs.grad, [[-0.5, -0.5], [-2 * LN(2) / 4, 0.0]])


def test_scope_loss_skips_wrong_rollout_with_failed_teacher():
    logprobs = t([[LN(0.5)], [LN(0.5)], [LN(0.5)]], grad=True)
    teacher = t([[NAN], [LN(0.25)], [NAN]])
    weights = ScopeWeights(student=t([1.0, 0.0, 0.0]), teacher=t([0.0, 1.0, 1.0]))
    out = scope_loss(
        logprobs, logprobs.detach().clone(), teacher, mask_of([[1], [1], [1]]),
        mask_of([1, 0, 0]), weights,
    )
    # row 2 (wrong, no teacher) is skipped; row 1: d = ln .25 - ln .5 = -ln 2 -> PG token ln 2
    # PG mean over rows 0 and 1: (0 + ln 2) / 2; MLE: -ln .5 = ln 2
    assert out.skipped_rows == 1
    assert out.loss.item() == pytest.approx(LN(2) / 2 + LN(2))
    out.loss.backward()
    assert logprobs.grad[2].item() == 0.0


# --- SIRI --------------------------------------------------------------------------------------


def test_siri_internalization_loss_gates_and_weights():
    logp = t([[LN(0.5), LN(0.25)], [LN(0.1), LN(0.1)], [LN(0.1), LN(0.1)], [LN(0.8), LN(0.4)]], grad=True)
    mask = mask_of([[1, 1], [1, 1], [1, 1], [1, 0]])  # row 3's second token is not an action
    used = mask_of([1, 1, 0, 1])
    utility = t([0.3, -0.2, 0.5, 0.1])  # row 1's skill has negative utility
    adv = t([0.5, 2.0, 2.0, 3.0])
    loss = siri_internalization_loss(logp, mask, used, utility, adv, weight_clip=1.0)
    # gated tokens: row 0 (both), row 3 (first) -> sum g = 3
    # weights: row 0 clip(0.5, 0, 1) = 0.5; row 3 clip(3, 0, 1) = 1
    expected = -(0.5 * LN(0.5) + 0.5 * LN(0.25) + 1.0 * LN(0.8)) / 3
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert_close(logp.grad, [[-0.5 / 3, -0.5 / 3], [0.0, 0.0], [0.0, 0.0], [-1 / 3, 0.0]])


def test_siri_negative_advantage_weighs_zero_but_counts_in_denominator():
    logp = t([[LN(0.5)], [LN(0.25)]])
    loss = siri_internalization_loss(
        logp, mask_of([[1], [1]]), mask_of([1, 1]), t([1.0, 1.0]), t([-4.0, 0.5]), weight_clip=2.0
    )
    # weights [clip(-4) = 0, 0.5]; sum g = 2 -> -(0.5 ln .25) / 2
    assert loss.item() == pytest.approx(-(0.5 * LN(0.25)) / 2)


def test_linear_warmup():
    assert linear_warmup(0, warmup_steps=10, max_value=2.0) == 0.0
    assert linear_warmup(5, warmup_steps=10, max_value=2.0) == 1.0  # 2 * 5 / 10
    assert linear_warmup(25, warmup_steps=10, max_value=2.0) == 2.0  # capped at lambda_max
    assert linear_warmup(3, warmup_steps=0, max_value=2.0) == 2.0  # no warm-up
    with pytest.raises(ValueError, match="step"):
        linear_warmup(-1, warmup_steps=10, max_value=2.0)


# --- DPO ----------------------------------------------------------------------------------------


def test_dpo_loss_by_hand():
    pc = t([-1.0, -2.0], grad=True)
    loss = dpo_loss(pc, t([-3.0, -2.0]), t([-2.0, -2.0]), t([-2.0, -2.0]), beta=0.5)
    # pair 0: margin (-1 + 2) - (-3 + 2) = 2, z = 1 -> -log sigmoid(1) = log(1 + e^-1)
    # pair 1: margin 0 -> log 2
    assert loss.item() == pytest.approx((math.log1p(math.exp(-1)) + LN(2)) / 2)
    loss.backward()
    # d/d pc = -beta * sigmoid(-z) / N < 0: raising the chosen log-prob lowers the loss
    sig = 1 / (1 + math.exp(1))
    assert pc.grad.tolist() == pytest.approx([-0.5 * sig / 2, -0.5 * 0.5 / 2])


# --- robustness: empty action masks ------------------------------------------------------------


def test_every_aggregated_loss_is_zero_with_grad_path_on_an_empty_mask():
    none = mask_of([[0, 0]])
    lp = t([[LN(0.5), LN(0.5)]], grad=True)
    old = lp.detach().clone()
    teacher = t([[LN(0.25), LN(0.25)]])
    logits = t([[[0.0, 1.0], [1.0, 0.0]]], grad=True)
    ids = torch.tensor([[[0, 1], [0, 1]]])
    topk = t([[[LN(0.5), LN(0.5)], [LN(0.5), LN(0.5)]]])
    losses = {
        "ppo": ppo_clip_loss(lp, old, t([[1.0, 1.0]]), none),
        "is": importance_sampling_loss(lp, old, t([[1.0, 1.0]]), none),
        "kl": low_var_kl_loss(lp, teacher, none),
        "jsd": generalized_jsd_loss(logits, logits.detach() + 1, torch.full((1, 2), IGNORE_INDEX)),
        "opd": opd_loss(lp, old, teacher, none).loss,
        "aopd": aopd_loss(lp, old, teacher, logits, ids, topk, none).loss,
        "scope": scope_loss(
            lp, old, teacher, none, mask_of([0]), ScopeWeights(t([0.0]), t([1.0]))
        ).loss,
        "siri": siri_internalization_loss(lp, none, mask_of([1]), t([1.0]), t([1.0])),
        "dpo": dpo_loss(t([], grad=True), t([]), t([]), t([])),
    }
    for name, loss in losses.items():
        assert loss.item() == 0.0, name
        assert loss.requires_grad, name
        assert not torch.isnan(loss), name
    sum(losses.values()).backward()
    assert torch.isfinite(lp.grad).all() and torch.isfinite(logits.grad).all()

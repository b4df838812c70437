"""Every training objective as a small pure function over tensors.

Conventions shared by every function here:
- `logits` are [batch, time, vocab] and already aligned with `labels` (position t predicts
  `labels[:, t]`); `labels` hold -100 wherever no loss is taken (prompt, observation and
  padding tokens), so loss falls on action tokens only.
- Aggregation is a token mean over the unmasked positions of the whole batch (the
  "token-mean" of DAPO/verl), unless a function says otherwise.
- Policy-gradient and distillation objectives take per-token log-probs [batch, time] of the
  sampled tokens (see `token_logprobs`) and a boolean action `mask` [batch, time] that is
  True on the policy's own action tokens only (prompt, tool-output and padding tokens False).
- Every aggregated loss returns a zero that still carries a gradient path when nothing is
  selected, and never a NaN: a rollout whose teacher log-probs are missing (NaN, the mark of
  a failed teacher call) is dropped and counted, see `teacher_coverage`.
- Each docstring tags its source: [read-from-source], [secondary] or [inferred], as in
  `reference/algorithms.md`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Supervised next-token loss: mean over labelled tokens of -log p(label).

    L = -(1/N) * sum_{t: labels_t != -100} log softmax(logits_t)[labels_t]

    A batch with no labelled token returns a zero that still carries a gradient path
    (so gradient accumulation and DDP never see a NaN or a missing graph).
    """
    flat_logits = logits.reshape(-1, logits.size(-1))
    flat_labels = labels.reshape(-1)
    n = (flat_labels != IGNORE_INDEX).sum()
    if int(n) == 0:
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits.float(), flat_labels, ignore_index=IGNORE_INDEX, reduction="sum") / n


# ---------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half-precision logits before softmax (bf16 log-probs are too coarse); keep fp64."""
    return x if x.dtype == torch.float64 else x.float()


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label_t) at every position, 0 where `labels` is -100. [B, T, V] -> [B, T]."""
    logp = F.log_softmax(_at_least_fp32(logits), dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(labels != IGNORE_INDEX, picked, torch.zeros_like(picked))


def action_mask(labels: torch.Tensor) -> torch.Tensor:
    """Boolean [B, T] mask of the positions that carry a label (the policy's action tokens)."""
    return labels != IGNORE_INDEX


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token mean over the selected positions: sum_t m_t * v_t / max(1, sum_t m_t).

    Unselected positions are replaced (not multiplied) by zero so an inf there cannot
    poison the forward pass; an empty mask gives a zero still connected to `values`.
    """
    mask = mask.bool()
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1)


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast per-sequence advantages [B] to [B, T]; pass [B, T] through. Never trained."""
    adv = advantages.detach().to(like.dtype)
    return adv.unsqueeze(-1).expand_as(like) if adv.dim() == 1 else adv


# ---------------------------------------------------------------------------------------
# Policy gradient: PPO-clip, importance sampling, KL to a frozen reference
# ---------------------------------------------------------------------------------------


def ppo_clip_token_losses(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> torch.Tensor:
    """Per-token PPO-clip loss with decoupled bounds, [B, T].

    rho_t = exp(log pi_theta(y_t) - log pi_sample(y_t))
    l_t   = -min(rho_t * A_t, clip(rho_t, 1 - clip_low, 1 + clip_high) * A_t)

    The ratio is against the log-probs recorded when the rollout was sampled, so several
    update epochs over one batch stay anchored to the sampler. The log-ratio is clamped to
    [-20, 20] before exp, as verl does, so a stale token cannot overflow. Outside the bounds
    (rho > 1 + clip_high with A > 0, rho < 1 - clip_low with A < 0) the clipped term is a
    constant and the token gives no gradient. `advantages` is [B] or [B, T] and is detached.
    [read-from-source: verl `compute_policy_loss`; decoupled bounds as in DAPO]
    """
    adv = _per_token(advantages, logprobs)
    ratio = torch.exp((logprobs - sampler_logprobs.detach()).clamp(-20.0, 20.0))
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped, clipped)


def ppo_clip_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> torch.Tensor:
    """PPO-clip surrogate, token-mean over the action mask (tool-output tokens excluded).

    L = (1 / sum m) * sum_t m_t * l_t with l_t from `ppo_clip_token_losses`.
    Defaults: verl's clip 0.2 both sides; DAPO uses clip_high = 0.28. [read-from-source]
    """
    losses = ppo_clip_token_losses(
        logprobs, sampler_logprobs, advantages, clip_low=clip_low, clip_high=clip_high
    )
    return masked_token_mean(losses, mask)


def ppo_clip_fraction(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> float:
    """Share of action tokens whose clipped term is the active one (a training diagnostic)."""
    with torch.no_grad():
        adv = _per_token(advantages, logprobs)
        ratio = torch.exp((logprobs - sampler_logprobs).clamp(-20.0, 20.0))
        clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high) > -adv * ratio
        return float(masked_token_mean(clipped.float(), mask))


def importance_sampling_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Unclipped importance-weighted policy gradient, token-mean over the mask.

    L = -(1 / sum m) * sum_t m_t * A_t * exp(log pi_theta(y_t) - log pi_sample(y_t))

    tinker-cookbook's `importance_sampling` loss (the OPD default), aggregated as a token
    mean here rather than a sum so its scale matches the other objectives. [read-from-source]
    """
    adv = _per_token(advantages, logprobs)
    ratio = torch.exp((logprobs - sampler_logprobs.detach()).clamp(-20.0, 20.0))
    return masked_token_mean(-adv * ratio, mask)


def low_var_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi_theta || pi_ref) on the sampled tokens, [B, T].

    d = clamp(log pi_ref - log pi_theta, -20, 20);  k3 = clamp(exp(d) - d - 1, -10, 10)

    Non-negative, unbiased for the KL under samples from pi_theta, and low variance. The
    clamps are verl's, for numerical safety. [read-from-source: verl `kl_penalty`,
    "low_var_kl"; GiGPO uses it with coefficient 0.01]
    """
    d = (ref_logprobs.detach() - logprobs).clamp(-20.0, 20.0)
    return (torch.exp(d) - d - 1.0).clamp(-10.0, 10.0)


def low_var_kl_loss(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """`low_var_kl` token-mean over the action mask (multiply by the KL coefficient)."""
    return masked_token_mean(low_var_kl(logprobs, ref_logprobs), mask)


# ---------------------------------------------------------------------------------------
# Teacher signal: missing teacher log-probs drop the rollout, never produce a NaN
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherCoverage:
    """Which rollouts have a usable teacher signal.

    `teacher_logprobs` has every non-finite entry replaced by 0 (so arithmetic on it, and
    the gradient through it, stays finite); `mask` is the action mask with the rows that
    lack a teacher cleared; `has_teacher` is [B]; `skipped_rows` counts rows dropped.
    """

    teacher_logprobs: torch.Tensor
    mask: torch.Tensor
    has_teacher: torch.Tensor
    skipped_rows: int

    @property
    def reason(self) -> str:
        """The line to log when rows were skipped ("" when none were)."""
        if not self.skipped_rows:
            return ""
        return (
            f"skipped {self.skipped_rows} rollout(s): teacher log-probs missing "
            "(the teacher call failed); they take no part in this loss"
        )


def teacher_coverage(
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor | None = None,
) -> TeacherCoverage:
    """Drop the rollouts whose teacher log-probs are missing on any action token.

    A failed teacher call is marked by NaN (any non-finite value counts) in
    `teacher_logprobs` [B, T] or, when given, in `teacher_topk_logprobs` [B, T, K]. Only
    positions inside `mask` are inspected, so padding may hold anything. A missing signal
    cannot be repaired by zero-filling (that would read as "the teacher agrees"), so the
    whole rollout is skipped and counted. [ours: on-policy distillation's robustness rule]
    """
    mask = mask.bool()
    teacher = teacher_logprobs.detach()
    bad = ~torch.isfinite(teacher)
    if teacher_topk_logprobs is not None:
        bad = bad | ~torch.isfinite(teacher_topk_logprobs.detach()).all(dim=-1)
    has_teacher = ~(bad & mask).any(dim=-1)
    return TeacherCoverage(
        teacher_logprobs=torch.where(torch.isfinite(teacher), teacher, torch.zeros_like(teacher)),
        mask=mask & has_teacher.unsqueeze(-1),
        has_teacher=has_teacher,
        skipped_rows=int((~has_teacher).sum()),
    )


def _finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


@dataclass(frozen=True)
class DistillAdvantages:
    """Per-token advantages [B, T] (0 off the mask), the mask they hold on, rows skipped."""

    advantages: torch.Tensor
    mask: torch.Tensor
    skipped_rows: int


@dataclass(frozen=True)
class DistillLoss:
    """A distillation loss, the rollouts it skipped, and detached parts for logging."""

    loss: torch.Tensor
    skipped_rows: int
    parts: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# GKD: generalized Jensen-Shannon divergence over the full vocabulary
# ---------------------------------------------------------------------------------------


def generalized_jsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Generalized JSD between teacher and student next-token distributions (GKD).

    With p_S = softmax(z_S / T), p_T = softmax(z_T / T) at each labelled position:
        M      = beta * p_T + (1 - beta) * p_S       (in log space, via logsumexp)
        JSD_b  = beta * KL(p_T || M) + (1 - beta) * KL(p_S || M)
    summed over the vocabulary and averaged over the labelled tokens (labels != -100).
    The endpoints are defined as in TRL, not as limits of the mixture formula (which is
    identically 0 there): beta = 0 is forward KL(p_T || p_S), beta = 1 reverse KL(p_S || p_T).
    The teacher gets no gradient. [read-from-source: TRL `GKDTrainer.generalized_jsd_loss`]
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta}: it must lie in [0, 1] (0 forward KL, 1 reverse KL)")
    log_s = F.log_softmax(_at_least_fp32(student_logits) / temperature, dim=-1)
    log_t = F.log_softmax(_at_least_fp32(teacher_logits.detach()) / temperature, dim=-1)
    if beta == 0.0:
        per_vocab = log_t.exp() * (log_t - log_s)
    elif beta == 1.0:
        per_vocab = log_s.exp() * (log_s - log_t)
    else:
        log_m = torch.logsumexp(
            torch.stack([log_s + math.log1p(-beta), log_t + math.log(beta)]), dim=0
        )
        kl_teacher = log_t.exp() * (log_t - log_m)
        kl_student = log_s.exp() * (log_s - log_m)
        per_vocab = beta * kl_teacher + (1.0 - beta) * kl_student
    return masked_token_mean(per_vocab.sum(dim=-1), action_mask(labels))


# ---------------------------------------------------------------------------------------
# OPD: reverse KL as a per-token advantage
# ---------------------------------------------------------------------------------------


def opd_advantages(
    sampler_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    kl_coef: float = 1.0,
    discount: float = 0.0,
) -> DistillAdvantages:
    """On-policy distillation advantage: minus the sampled-token reverse KL.

    k_t = log pi_sample(y_t) - log pi_T(y_t)      (one-sample estimate of KL(pi_S || pi_T))
    A_t = -c * k_t * m_t
    optional discounting  A_t <- sum_{j >= t} discount^(j - t) * A_j  over token positions
    (masked positions add 0 but still count as steps, as in tinker-cookbook).

    Feed A_t (plus any task advantage) to `importance_sampling_loss` or `ppo_clip_loss`
    with the returned mask. Rollouts whose teacher log-probs are missing are dropped.
    [read-from-source: tinker-cookbook `incorporate_kl_penalty`; defaults c = 1, discount 0]
    """
    cov = teacher_coverage(teacher_logprobs, mask)
    reverse_kl = sampler_logprobs.detach() - cov.teacher_logprobs
    adv = torch.where(cov.mask, -kl_coef * reverse_kl, torch.zeros_like(reverse_kl))
    if discount > 0.0:
        running = torch.zeros_like(adv[..., 0])
        discounted = torch.empty_like(adv)
        for t in range(adv.size(-1) - 1, -1, -1):
            running = adv[..., t] + discount * running
            discounted[..., t] = running
        adv = torch.where(cov.mask, discounted, torch.zeros_like(discounted))
    return DistillAdvantages(advantages=adv, mask=cov.mask, skipped_rows=cov.skipped_rows)


def opd_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    kl_coef: float = 1.0,
    discount: float = 0.0,
) -> DistillLoss:
    """Pure OPD: `importance_sampling_loss` with the `opd_advantages` (task advantage 0)."""
    adv = opd_advantages(sampler_logprobs, teacher_logprobs, mask, kl_coef=kl_coef, discount=discount)
    loss = importance_sampling_loss(logprobs, sampler_logprobs, adv.advantages, adv.mask)
    return DistillLoss(loss=loss, skipped_rows=adv.skipped_rows)


# ---------------------------------------------------------------------------------------
# AOPD: reinforce where the teacher agrees more, pull to the teacher elsewhere
# ---------------------------------------------------------------------------------------


def topk_reverse_kl(
    student_logits: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
) -> torch.Tensor:
    """Reverse KL on the teacher's top-K support, both sides renormalised there, [B, T].

    D(t) = sum_{v in TopK_T(t)} p~_S(v) * (log p~_S(v) - log p~_T(v))
    with p~ = p / sum_{u in TopK_T(t)} p(u). Gradient flows through the student only.
    [read-from-source: SCOPE `dp_actor.py` distill_signal_in_loss; AOPD's D_loc]
    """
    student_k = F.log_softmax(
        _at_least_fp32(student_logits).gather(-1, teacher_topk_ids.long()), dim=-1
    )
    teacher_k = F.log_softmax(_at_least_fp32(teacher_topk_logprobs.detach()), dim=-1)
    return (student_k.exp() * (student_k - teacher_k)).sum(dim=-1)


def aopd_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    eta: float = 1.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> DistillLoss:
    """Asymmetric OPD: positive-advantage tokens reinforced, the rest pulled to the teacher.

    A_t = sg(log pi_T(y_t) - log pi_theta(y_t));  P = {t : A_t > 0},  N = {t : A_t <= 0}
    L = (1/|T|) * [ sum_{t in P} l^clip_t(A_t)  +  eta * sum_{t in N} D_loc(t) ]
    where l^clip is the PPO-clip token loss against the sampler (`ppo_clip_token_losses`),
    D_loc is `topk_reverse_kl` on the teacher's top-K support, and |T| counts all action
    tokens. Negative and zero-advantage tokens are thus never pushed down, only moved
    towards the teacher's local distribution.

    [inferred: the paper's abstract plus a third-party note; this implements the reading
    given in reference/algorithms.md 4c, including A_t taken against the current policy
    (detached) and the top-K reverse KL as D_loc. Suggested defaults eta 1, K 20, clip 0.2.]

    Shapes: logprobs, sampler_logprobs, teacher_logprobs, mask [B, T]; student_logits
    [B, T, V]; teacher_topk_ids / teacher_topk_logprobs [B, T, K]. Rollouts whose teacher
    signal is missing (NaN) are skipped and counted.
    """
    cov = teacher_coverage(teacher_logprobs, mask, teacher_topk_logprobs)
    topk_lp = _finite_or_zero(teacher_topk_logprobs)
    advantage = cov.teacher_logprobs - logprobs.detach()
    positive = advantage > 0
    reinforce = ppo_clip_token_losses(
        logprobs, sampler_logprobs, advantage, clip_low=clip_low, clip_high=clip_high
    )
    pull = eta * topk_reverse_kl(student_logits, teacher_topk_ids, topk_lp)
    per_token = torch.where(positive, reinforce, pull)
    with torch.no_grad():
        n_tokens = cov.mask.sum().clamp(min=1)
        parts = {"positive_fraction": float((positive & cov.mask).sum() / n_tokens)}
    return DistillLoss(
        loss=masked_token_mean(per_token, cov.mask), skipped_rows=cov.skipped_rows, parts=parts
    )


# ---------------------------------------------------------------------------------------
# SCOPE: route by correctness, weight by perplexity within the prompt group
# ---------------------------------------------------------------------------------------


def sequence_mean_logprob(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Length-normalised sequence log-likelihood l = mean_t log p(y_t) per row, [B].

    PPL = exp(-l). A row without action tokens gets l = 0.
    """
    mask = mask.bool()
    total = torch.where(mask, token_logprobs, torch.zeros_like(token_logprobs)).sum(dim=-1)
    return total / mask.sum(dim=-1).clamp(min=1)


@dataclass(frozen=True)
class ScopeWeights:
    """SCOPE's per-response weights, [N] each: `student` on correct rows (0 elsewhere),
    `teacher` on wrong rows that have a teacher signal (0 elsewhere)."""

    student: torch.Tensor
    teacher: torch.Tensor


def _count_scaled_group_softmax(
    scores: torch.Tensor, group_index: torch.Tensor, member: torch.Tensor
) -> torch.Tensor:
    """n_g * softmax_g(scores) over the members of each group; 0 for non-members."""
    gi = group_index.long()
    n_groups = int(gi.max()) + 1
    masked = torch.where(member, scores, torch.full_like(scores, -math.inf))
    top = torch.full((n_groups,), -math.inf, dtype=scores.dtype).scatter_reduce(
        0, gi, masked, reduce="amax", include_self=True
    )
    # subtracting the group max keeps exp() in range; non-members are zeroed after
    shifted = torch.where(member, masked - top[gi], torch.zeros_like(scores))
    e = torch.where(member, shifted.exp(), torch.zeros_like(scores))
    zeros = torch.zeros(n_groups, dtype=scores.dtype)
    denom = zeros.index_add(0, gi, e)
    count = zeros.index_add(0, gi, member.to(scores.dtype))
    return torch.where(member, count[gi] * e / denom[gi].clamp(min=1e-300), torch.zeros_like(e))


def scope_path_weights(
    student_mean_logprob: torch.Tensor,
    teacher_mean_logprob: torch.Tensor,
    correct: torch.Tensor,
    group_index: torch.Tensor,
    *,
    tau: float = 1.0,
    has_teacher: torch.Tensor | None = None,
) -> ScopeWeights:
    """SCOPE's perplexity-softmax weights within each prompt group, mean 1 per path.

    With PPL = exp(-l) (l from `sequence_mean_logprob`), Omega_c / Omega_w the correct /
    wrong responses of one prompt group:
        w_stu_i = |Omega_c| * PPL_S(i)^(1/tau)  / sum_{j in Omega_c} PPL_S(j)^(1/tau)
        w_tea_i = |Omega_w| * PPL_T(i)^(-1/tau) / sum_{j in Omega_w} PPL_T(j)^(-1/tau)
    i.e. |Omega| * softmax(-l_S / tau) on the correct path (the student's least confident
    correct answers weigh most) and |Omega| * softmax(+l_T / tau) on the wrong path (the
    wrong answers the teacher finds most plausible weigh most). A singleton gets 1; a prompt
    group with one correct answer gives it w_stu = 1.

    [read-from-source: SCOPE `_compute_scope_dual_path_weights`, but following the paper's
    sign: the released script's flags give PPL_S^(-1/tau) on the student path, see the
    caveat in reference/algorithms.md 4d.] Wrong rows with `has_teacher` False are left out
    of Omega_w (weight 0), as are rows whose teacher likelihood is not finite, so the others'
    weights do not depend on a failed call.
    """
    correct = correct.bool().reshape(-1)
    l_s = student_mean_logprob.detach().to(torch.float64).reshape(-1)
    raw_t = teacher_mean_logprob.detach().reshape(-1)
    # a NaN teacher likelihood is a failed call even when the caller did not say so
    usable = torch.isfinite(raw_t) if has_teacher is None else has_teacher.bool() & torch.isfinite(raw_t)
    l_t = _finite_or_zero(raw_t).to(torch.float64)
    if correct.numel() == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return ScopeWeights(student=empty, teacher=empty)
    gi = group_index.reshape(-1)
    return ScopeWeights(
        student=_count_scaled_group_softmax(-l_s / tau, gi, correct),
        teacher=_count_scaled_group_softmax(l_t / tau, gi, ~correct & usable),
    )


def scope_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    correct: torch.Tensor,
    weights: ScopeWeights,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> DistillLoss:
    """SCOPE dual-path loss: teacher-guided PPO on wrong answers, weighted MLE on correct ones.

    Wrong path (i in Omega_w): d_t = w_tea_i * (log pi_T(y_t) - log pi_S^old(y_t)) is the raw
    advantage (no normalisation) of the PPO-clip surrogate, token-mean over the action
    tokens of every kept row (correct rows add 0 there but count, as in verl's aggregation).
    Correct path: L_MLE = -sum_{i in Omega_c} w_stu_i * sum_t log pi_theta(y_t), averaged
    over the action tokens of correct rows only.   L = L_PG + L_MLE.
    `old_logprobs` are the trainer's recomputed log-probs, not the sampler's.
    A wrong row whose teacher log-probs are missing is skipped and counted; a correct row
    needs no teacher and is kept. [read-from-source: SCOPE `compute_advantage` and
    `dp_actor.py`]
    """
    mask = mask.bool()
    correct = correct.bool().reshape(-1)
    wrong_rows = (~correct).unsqueeze(-1)
    cov = teacher_coverage(teacher_logprobs, mask & wrong_rows)
    skipped = ~cov.has_teacher  # only wrong rows can miss (correct rows were not inspected)
    kept = mask & ~skipped.unsqueeze(-1)

    w_tea = weights.teacher.to(logprobs.dtype).unsqueeze(-1)
    gap = cov.teacher_logprobs.to(logprobs.dtype) - old_logprobs.detach()
    advantage = torch.where(wrong_rows & kept, w_tea * gap, torch.zeros_like(gap))
    pg_tokens = ppo_clip_token_losses(
        logprobs, old_logprobs, advantage, clip_low=clip_low, clip_high=clip_high
    )
    wrong_path = masked_token_mean(pg_tokens, kept)

    w_stu = weights.student.to(logprobs.dtype).unsqueeze(-1)
    correct_tokens = mask & correct.unsqueeze(-1)
    correct_path = masked_token_mean(-w_stu * logprobs, correct_tokens)
    return DistillLoss(
        loss=wrong_path + correct_path,
        skipped_rows=cov.skipped_rows,
        parts={"wrong_path": float(wrong_path.detach()), "correct_path": float(correct_path.detach())},
    )


# ---------------------------------------------------------------------------------------
# SIRI: advantage-weighted internalization of skill-guided actions
# ---------------------------------------------------------------------------------------


def siri_internalization_loss(
    plain_logprobs: torch.Tensor,
    mask: torch.Tensor,
    skill_used: torch.Tensor,
    skill_utility: torch.Tensor,
    advantages: torch.Tensor,
    *,
    weight_clip: float = 1.0,
) -> torch.Tensor:
    """SIRI's internalization loss on skill-guided actions re-scored under the plain prompt.

    g_t = 1[skill used] * 1[U(k) > 0] * 1[t is an action token]
    w_t = clip(A_t, 0, c)                      (A_t: the step's GiGPO advantage, detached)
    L   = -sum_t g_t * w_t * log pi_theta(y_t | plain context, y_<t) / sum_t g_t

    `plain_logprobs` [B, T] are the skill-guided rollout's action tokens scored with the
    skill removed from the prompt; `mask` marks action tokens (reasoning/format and
    tool-output tokens False); `skill_used`, `skill_utility` are [B]; `advantages` [B] or
    [B, T]. No gated token gives a zero with a gradient path. Combine as
    L_GiGPO + beta * L_KL + `linear_warmup`(k) * L_int.
    [secondary + inferred: the gate and weights come from a third-party note; the loss form
    is the reading in reference/algorithms.md 2 (the KL alternative is not implemented);
    c is not reported, 1.0 is our default]
    """
    gate = (
        mask.bool()
        & skill_used.bool().reshape(-1, 1)
        & (skill_utility.reshape(-1, 1) > 0)
    )
    weight = _per_token(advantages, plain_logprobs).clamp(0.0, weight_clip)
    return masked_token_mean(-weight * plain_logprobs, gate)


def linear_warmup(step: int, *, warmup_steps: int, max_value: float) -> float:
    """lambda(k) = max_value * min(1, k / K_warm); K_warm <= 0 means no warm-up.

    [secondary: SIRI's coefficient schedule for L_int]
    """
    if step < 0:
        raise ValueError(f"step={step}: training steps count from 0")
    if warmup_steps <= 0:
        return float(max_value)
    return float(max_value) * min(1.0, step / warmup_steps)


# ---------------------------------------------------------------------------------------
# DPO (SelSkill's episode and local pairs alike)
# ---------------------------------------------------------------------------------------


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO: L = mean_pairs -log sigmoid(beta * [(pi_w - ref_w) - (pi_l - ref_l)]).

    Inputs are [N] sequence log-prob sums of the chosen (w) and rejected (l) responses
    under the policy and the frozen reference. -log sigmoid(z) is computed as softplus(-z),
    which does not overflow. No pairs give a zero with a gradient path. [read-from-source:
    the DPO objective as in TRL; beta 0.1 is TRL's default, SelSkill does not report its beta]
    """
    margin = (policy_chosen - ref_chosen.detach()) - (policy_rejected - ref_rejected.detach())
    losses = F.softplus(-beta * margin)
    if losses.numel() == 0:
        return losses.sum() * 0.0
    return losses.mean()


# ---------------------------------------------------------------------------------------
# GRPO, DAPO and PGPO as policy losses (their rewards and sampling: `train.advantages`)
# ---------------------------------------------------------------------------------------


def sequence_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRPO's aggregation: the token mean within each sequence, then the mean over the
    sequences that have at least one selected token.

    L = (1 / |S|) * sum_{i in S} (sum_t m_it * v_it / sum_t m_it),  S = {i : sum_t m_it > 0}

    Each sequence weighs the same whatever its length (DAPO's token mean weighs every token
    the same instead). An empty mask gives a zero still connected to `values`.
    """
    mask = mask.bool()
    per_row = torch.where(mask, values, torch.zeros_like(values)).sum(dim=-1)
    n_tok = mask.sum(dim=-1)
    has = n_tok > 0
    if not bool(has.any()):
        return values.sum() * 0.0
    return (per_row[has] / n_tok[has]).mean()


def grpo_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float = 0.2,
) -> torch.Tensor:
    """GRPO's policy loss: PPO-clip with the symmetric bound `clip`, per-sequence token mean
    then the mean over sequences (`sequence_token_mean`); no KL term here (add
    `low_var_kl_loss` for one). The advantage is the group-normalised outcome reward
    (`train.advantages.group_relative_advantages`). [read-from-source: verl GRPO,
    loss_agg_mode "seq-mean-token-mean"]
    """
    losses = ppo_clip_token_losses(logprobs, sampler_logprobs, advantages, clip_low=clip, clip_high=clip)
    return sequence_token_mean(losses, mask)


def dapo_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> torch.Tensor:
    """DAPO's policy loss: PPO-clip with the decoupled bounds 1 - 0.2 / 1 + 0.28 (clip-higher),
    token-mean over every action token of the batch, no KL. Overlong rows are removed from
    `mask` and the soft length penalty is added to the reward before the advantage
    (`train.advantages.soft_overlong_penalty`). [read-from-source: DAPO recipe in verl]
    """
    return ppo_clip_loss(logprobs, sampler_logprobs, advantages, mask, clip_low=clip_low, clip_high=clip_high)


def pgpo_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> torch.Tensor:
    """PGPO's policy loss, our reading of V-tableR1's abstract: DAPO's decoupled clip and
    token mean; what makes it PGPO is the process-gated reward
    (`train.advantages.process_gated_rewards`) and the length-balanced dynamic sampling
    (`train.advantages.length_balanced_groups`). Pass clip_high = clip_low for the
    ablation without the decoupled clip. [inferred: reference/vision.md, ours]
    """
    return ppo_clip_loss(logprobs, sampler_logprobs, advantages, mask, clip_low=clip_low, clip_high=clip_high)

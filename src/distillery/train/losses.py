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

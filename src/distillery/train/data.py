"""Training examples and batches.

An `Example` is one token sequence with its targets: ``labels[t] = input_ids[t]`` where
token t is an action token (a target), ``-100`` elsewhere (instruction, observations,
markers that open a turn), the Hugging Face convention; losses shift by one so position
t-1 predicts token t. Build them from what `agents.prompts.episode_example_ids` returns::

    ids, mask = episode_example_ids(instruction, turns, tok, prompt_cfg)
    ex = example_from_mask(ids, mask)

Objectives beyond SFT attach per-sequence numbers (an advantage) or per-token numbers
(old log-probs, teacher log-probs) as ``extras``; `collate` turns them into ``[B]`` or
``[B, T]`` tensors (per-token ones padded with 0).

Batching (`batch_order`) is deterministic in (seed, epoch): shuffle, then optionally sort
by length within windows of ``bucket_window`` micro-batches (so each micro-batch holds
sequences of similar length and little padding), then shuffle the micro-batches.

An objective over *groups* of examples (a preference pair: the steps of its chosen and its
rejected episode) trains on `ExampleGroups` instead: the caller orders groups, a
micro-batch collates every example its groups need once (`collate_groups`), and the
objective gets a `GroupBatch` that says which rows belong to which group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from distillery.train.losses import IGNORE_INDEX


@dataclass(frozen=True)
class Example:
    """One training sequence. `extras` values are a number (per sequence) or a list of
    numbers as long as `input_ids` (per token)."""

    input_ids: list[int]
    labels: list[int]
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(f"Example: {len(self.input_ids)} input_ids but {len(self.labels)} labels")
        if not self.input_ids:
            raise ValueError("Example: empty sequence")
        for k, v in self.extras.items():
            if isinstance(v, (list, tuple)) and len(v) != len(self.input_ids):
                raise ValueError(f"Example: per-token extra {k!r} has {len(v)} values for "
                                 f"{len(self.input_ids)} tokens")

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_labels(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)

    def truncated(self, max_len: int) -> Example:
        """The first `max_len` tokens (a prefix, so it still matches what acting sees)."""
        if len(self) <= max_len:
            return self
        extras = {k: (list(v[:max_len]) if isinstance(v, (list, tuple)) else v) for k, v in self.extras.items()}
        return Example(list(self.input_ids[:max_len]), list(self.labels[:max_len]), extras)


def example_from_mask(ids: Sequence[int], mask: Sequence[bool], extras: Mapping[str, Any] | None = None) -> Example:
    """An Example whose targets are the tokens where `mask` is true."""
    if len(ids) != len(mask):
        raise ValueError(f"example_from_mask: {len(ids)} ids but {len(mask)} mask values")
    ids = [int(i) for i in ids]
    return Example(ids, [i if m else IGNORE_INDEX for i, m in zip(ids, mask, strict=True)], dict(extras or {}))


def example_from_prompt(prompt_ids: Sequence[int], target_ids: Sequence[int],
                        extras: Mapping[str, Any] | None = None) -> Example:
    """One step as acting renders it: `prompt_ids` (no targets) then `target_ids` (all
    targets), e.g. ``render_compact_ids(ctx, ...)`` and ``action_ids(tok, action)`` for an
    episode that `episode_example_ids` could not render as one sequence."""
    if not target_ids:
        raise ValueError("example_from_prompt: no target tokens")
    ids = [*prompt_ids, *target_ids]
    return example_from_mask(ids, [False] * len(prompt_ids) + [True] * len(target_ids), extras)


def examples_from_masks(pairs: Iterable[tuple[Sequence[int], Sequence[bool]] | None]) -> list[Example]:
    """Examples from `(ids, mask)` pairs; ``None`` entries (episodes that did not fit the
    prompt budget, see `episode_example_ids`) are skipped, so count them before calling."""
    return [example_from_mask(ids, mask) for pair in pairs if pair is not None for ids, mask in [pair]]


@dataclass
class Batch:
    """A padded micro-batch. Right padding; `attention_mask` is None when no row is padded
    (the attention kernels then take their faster causal-only path)."""

    input_ids: torch.Tensor                 # [B, T] long
    labels: torch.Tensor                    # [B, T] long, IGNORE_INDEX on padding and non-targets
    attention_mask: torch.Tensor | None     # [B, T] long (1 = token) or None
    extras: dict[str, torch.Tensor]         # [B] or [B, T]
    n_tokens: int                           # real (non-padding) tokens
    n_labels: int                           # target tokens

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device, non_blocking=True), self.labels.to(device, non_blocking=True),
            None if self.attention_mask is None else self.attention_mask.to(device, non_blocking=True),
            {k: v.to(device, non_blocking=True) for k, v in self.extras.items()}, self.n_tokens, self.n_labels,
        )


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    """Right-pad `examples` to the longest into one Batch."""
    if not examples:
        raise ValueError("collate: no examples")
    width = max(len(e) for e in examples)
    n = len(examples)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    lengths = [len(e) for e in examples]
    for i, e in enumerate(examples):
        ids[i, : len(e)] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, : len(e)] = torch.tensor(e.labels, dtype=torch.long)
    mask = None
    if min(lengths) < width:
        mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    extras: dict[str, torch.Tensor] = {}
    for k in examples[0].extras:
        vals = [e.extras.get(k) for e in examples]
        if any(v is None for v in vals):
            raise ValueError(f"collate: extra {k!r} is missing from some examples of the batch")
        if isinstance(vals[0], (list, tuple)):
            t = torch.zeros((n, width), dtype=torch.float32)
            for i, v in enumerate(vals):
                t[i, : len(v)] = torch.tensor(v, dtype=torch.float32)
            extras[k] = t
        else:
            extras[k] = torch.tensor(vals, dtype=torch.float32)
    return Batch(ids, labels, mask, extras, sum(lengths), int((labels != IGNORE_INDEX).sum()))


@dataclass(frozen=True)
class ExampleGroups:
    """Training items that are groups of examples. `members[g]` are group g's indices into
    the training examples (they may overlap between groups); `order(epoch)` is that epoch's
    micro-batches of group indices, every group once, deterministic in the epoch (a
    resumed run asks for it again)."""

    members: Sequence[Sequence[int]]
    order: Callable[[int], list[list[int]]]


@dataclass
class GroupBatch:
    """A micro-batch of groups: `batch` holds every example they need once, in index order;
    `rows[i]` is the row of training example i; `groups` are the groups' indices in the
    order `ExampleGroups.order` gave them."""

    batch: Batch
    groups: list[int]
    rows: dict[int, int]

    @property
    def n_tokens(self) -> int:
        return self.batch.n_tokens

    def to(self, device: torch.device | str) -> GroupBatch:
        return GroupBatch(self.batch.to(device), self.groups, self.rows)


def collate_groups(examples: Sequence[Example], groups: ExampleGroups, idx: Sequence[int], pad_id: int) -> GroupBatch:
    """The `GroupBatch` of groups `idx`."""
    need = sorted({i for g in idx for i in groups.members[g]})
    return GroupBatch(collate([examples[i] for i in need], pad_id), list(idx), {i: r for r, i in enumerate(need)})


def batch_order(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int,
                bucket: bool = True, window: int = 32) -> list[list[int]]:
    """Micro-batches (lists of example indices) of one epoch; a function of its arguments only.

    Every example appears exactly once; the last micro-batch of a window may be smaller.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if not bucket:
        return [order[i: i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    lens = np.asarray(lengths)
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start: start + span]
        # stable sort: ties keep their shuffled order, so the result is still seed-driven
        chunk = chunk[np.argsort(lens[chunk], kind="stable")]
        batches += [chunk[i: i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def fingerprint(examples: Sequence[Example]) -> str:
    """A hash of the examples' tokens, targets and extras (decides whether a checkpoint
    belongs to this data)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(np.asarray(e.input_ids, dtype=np.int64).tobytes())
        h.update(np.asarray(e.labels, dtype=np.int64).tobytes())
        for k in sorted(e.extras):
            h.update(k.encode())
            h.update(np.asarray(e.extras[k], dtype=np.float64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]

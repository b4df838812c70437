"""Batched generation with a KV cache, returning the sampled tokens' log-probabilities.

Prompts are prefilled in chunks of similar length (sorted, left-padded within a chunk:
little padding, and attention matrices that stay in cache), then their key/value states
are laid side by side, right-aligned, in one preallocated cache; every row then decodes
one token per forward pass. The cache is written in place (transformers' DynamicCache
concatenates, copying the whole cache at every token: most of a CPU decode step). Rows
that hit a stop token leave the batch (their cache rows are dropped, in bulk once they are
an eighth of it), so a long action does not make the short ones pay. A second call for the
same episodes reuses the K/V of what they already processed and prefills only the new
tokens, again in chunks of similar length. Sampling is per-row reproducible: each row draws its noise from its own generator
seeded by the caller, so an episode samples the same tokens however it was batched
(up to float rounding of batched matmuls).

Log-probabilities are those of the model's own distribution (temperature 1, no top-p),
i.e. what a forward pass over the same tokens gives: the quantity RL importance ratios
and distillation losses need. Sampling itself uses temperature and top-p.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from distillery.lm.llama_forward import fast_forward

# Finished rows leave the decode batch once they are 1/DROP_FINISHED_SHARE of it.
DROP_FINISHED_SHARE = 8
# Sampling temperatures below this are checked for logits / temperature overflowing float32
# (see `_choose`). Above it, overflow needs logits beyond 3.4e38 * 1e-2, which no working model
# emits, and the check (a few passes over the logits per step) is skipped.
OVERFLOW_CHECK_BELOW = 1e-2


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0     # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")


@dataclass
class Generation:
    token_ids: list[int]         # generated tokens, the stop token included if it was hit
    logprobs: list[float]        # log p(token) under the model, one per generated token
    stopped: bool                # hit a stop token (False: ran out of max_new_tokens, or deferred)
    state: PrefixState | None = None   # with return_states: K/V to reuse on the next call
    # Deferred (see `generate`'s `defer_share`): not done; pass it back as `resume` to go on.
    deferred: bool = False
    generator: torch.Generator | None = field(default=None, repr=False)   # deferred: its sampling noise, to go on with


def _choose(logits: torch.Tensor, cfg: SamplingConfig, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """Next token per row: argmax, or Gumbel-max over the temperature/top-p distribution.

    Degenerate settings stay near-greedy: a temperature so small that logits / temperature
    overflows float32 (or rounds to 0 in it) samples among the row's top logits (checked
    below OVERFLOW_CHECK_BELOW), and the nucleus keeps the most likely token even when top_p
    rounds to 0 in float32. Wherever logits / temperature is free of +inf and NaN the
    arithmetic is the plain one, bit for bit, whatever the temperature."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    scaled = logits / cfg.temperature
    if cfg.temperature < OVERFLOW_CHECK_BELOW:
        scaled = _overflow_safe(logits, scaled, cfg.temperature)
    if cfg.top_p < 1.0:
        sorted_logits, order = scaled.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # keep the smallest prefix whose mass reaches top_p, and always the first token (for a
        # top_p above 0 in float32 the test below never drops it; one that rounds to 0 would)
        drop_sorted = probs.cumsum(-1) - probs >= cfg.top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    u = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in gens]).to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-10)))
    return (scaled + gumbel).argmax(-1)


def _overflow_safe(logits: torch.Tensor, scaled: torch.Tensor, temperature: float) -> torch.Tensor:
    """`scaled` (logits / temperature), except in rows where it overflowed to +inf or went NaN
    (a temperature tiny against the logits, or one that is 0 in float32): there the logits
    less their row maximum, divided by the temperature, which is 0 at the maximum (ties
    included) and at most 0 elsewhere: the same distribution, sampled without inf - inf.
    Rows with neither keep `scaled` untouched (no host sync: decided on the device)."""
    bad = (scaled.isposinf() | scaled.isnan()).any(-1, keepdim=True)
    gap = logits - logits.amax(-1, keepdim=True)
    shifted = torch.where(gap == 0, torch.zeros_like(gap), gap / temperature)
    return torch.where(bad, shifted, scaled)


@functools.cache
def _preallocated_layer_class() -> type:
    """A DynamicLayer that writes into a preallocated buffer instead of concatenating
    (built on first use, so importing this module does not import transformers)."""
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, buffers: tuple[torch.Tensor, torch.Tensor], length: int) -> None:
            super().__init__()
            self._k, self._v = buffers
            self._n = length
            self.device = self._k.device
            self.is_initialized = True
            self._expose()

        def _expose(self) -> None:
            self.keys = self._k[:, :, : self._n]
            self.values = self._v[:, :, : self._n]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):  # noqa: ANN002, ANN003
            n = key_states.shape[-2]
            if self._n + n > self._k.shape[-2]:
                raise RuntimeError("generation ran past its preallocated cache")
            self._k[:, :, self._n: self._n + n] = key_states
            self._v[:, :, self._n: self._n + n] = value_states
            self._n += n
            self._expose()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self._n

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            # Only the filled positions are copied (the room after them is written before it
            # is read), gathered straight into the new buffers.
            rows, n = len(indices), self._n
            k, v = self._k.new_empty((rows, *self._k.shape[1:])), self._v.new_empty((rows, *self._v.shape[1:]))
            torch.index_select(self._k[:, :, :n], 0, indices, out=k[:, :, :n])
            torch.index_select(self._v[:, :, :n], 0, indices, out=v[:, :, :n])
            self._k, self._v = k, v
            self._expose()

    return PreallocatedLayer


def _preallocated_cache(keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], length: int) -> Any:
    """A DynamicCache over preallocated per-layer buffers whose first `length` positions
    are filled; new tokens are written after them in place."""
    from transformers import DynamicCache

    layer_cls = _preallocated_layer_class()
    cache = DynamicCache()
    cache.layers = [layer_cls((k, v), length) for k, v in zip(keys, values, strict=True)]
    cache.layer_class_to_replicate = None
    return cache


@dataclass
class PrefixState:
    """Key/value states of a token sequence a row already processed (one episode's last
    prompt and action): a later prompt that starts with the same tokens reuses them and
    prefills only what is new. `keys`/`values` hold one [kv_heads, len(ids), head_dim]
    tensor per layer."""

    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _Batch:
    """Every row's K/V and attention mask, right-aligned at `width` with room for the tokens
    to generate after it: the decode loop's buffers, which the prefill passes fill part by
    part in place (one copy of each row's K/V, not one per part and another to merge them).
    `keys`/`values` hold one [rows, kv_heads, width + room, head_dim] tensor per layer,
    allocated once the first part shows their shapes; unfilled positions are zeros (left
    padding is read, masked, by attention: it must be finite)."""

    width: int
    mask: torch.Tensor                                          # [rows, width + room], True = attend
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)

    def allocate(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        """Allocate the buffers like `keys`/`values` (per layer, heads third from last and
        head_dim last: a cache's [rows, h, len, d] or a PrefixState's [h, len, d])."""
        if self.keys:
            return
        rows, cols = self.mask.shape
        self.keys = [k.new_zeros((rows, k.shape[-3], cols, k.shape[-1])) for k in keys]
        self.values = [v.new_zeros((rows, v.shape[-3], cols, v.shape[-1])) for v in values]


def _chunks(lengths: Sequence[int], chunk_tokens: int) -> list[range]:
    """Consecutive index ranges over `lengths` (sorted longest first): each as many rows as
    fit `chunk_tokens` at the length of its first (longest) row, at least one."""
    out = []
    start, n = 0, len(lengths)
    while start < n:
        stop = start + 1
        while stop < n and (stop - start + 1) * lengths[start] <= chunk_tokens:
            stop += 1
        out.append(range(start, stop))
        start = stop
    return out


Forward = Callable[..., torch.Tensor]


def _forward_of(model: torch.nn.Module, lean: bool) -> Forward:
    """`(input_ids, attention_mask, position_ids, cache, logits_to_keep) -> logits`: the lean
    Llama forward (lm/llama_forward.py, bit-identical) where it applies, else the model's own."""
    fast = fast_forward(model) if lean else None
    if fast is not None:
        return fast
    ckw = cache_kwarg(model)

    def own(input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any,
            logits_to_keep: int = 0) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                     logits_to_keep=logits_to_keep, **{ckw: cache}).logits

    return own


def _prefill_fresh(forward: Forward, prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device,
                   chunk_tokens: int, batch: _Batch, row0: int) -> torch.Tensor:
    """Prefill rows from scratch, longest first, in chunks of similar length (little
    padding; attention matrices that stay in cache), into `batch`'s rows from `row0`;
    returns their last-position logits."""
    from transformers import DynamicCache

    lengths = [len(p) for p in prompts]
    logits = []
    for chunk in _chunks(lengths, chunk_tokens):
        start, stop, w = chunk.start, chunk.stop, lengths[chunk.start]
        ids = torch.full((stop - start, w), pad_id, dtype=torch.long)
        m = torch.zeros((stop - start, w), dtype=torch.long)
        for r in range(start, stop):
            ids[r - start, w - lengths[r]:] = torch.tensor(list(prompts[r]), dtype=torch.long)
            m[r - start, w - lengths[r]:] = 1
        ids, m = ids.to(device), m.to(device)
        pos = (m.cumsum(-1) - 1).clamp(min=0)
        part = DynamicCache()
        logits.append(forward(ids, m, pos, part, 1)[:, -1, :])
        batch.allocate([layer.keys for layer in part.layers], [layer.values for layer in part.layers])
        rows, cols = slice(row0 + start, row0 + stop), slice(batch.width - w, batch.width)
        for li, layer in enumerate(part.layers):
            batch.keys[li][rows, :, cols] = layer.keys
            batch.values[li][rows, :, cols] = layer.values
        batch.mask[rows, cols] = m.bool()
    return torch.cat(logits)


def _extend_widths(prompts: Sequence[Sequence[int]], reuse: Sequence[int]) -> tuple[int, int]:
    """(P, S) of rows continuing from cached K/V: the most reused and the most new tokens."""
    return max(reuse), max(len(p) - r for p, r in zip(prompts, reuse, strict=True))


def _prefill_extend(forward: Forward, prompts: Sequence[Sequence[int]], states: Sequence[PrefixState],
                    reuse: Sequence[int], pad_id: int, device: torch.device, batch: _Batch, row0: int) -> torch.Tensor:
    """Rows whose first `reuse[i]` tokens have cached K/V, in `batch`'s rows from `row0`:
    lay those out right-aligned at width P (ending S before the batch's width), then run
    only the new tokens (right-aligned after them, positions continuing each row's own
    count) through the model once, writing their K/V in place; returns their last-position
    logits."""
    n = len(prompts)
    P, S = _extend_widths(prompts, reuse)
    batch.allocate(states[0].keys, states[0].values)
    end = batch.width
    ids = torch.full((n, S), pad_id, dtype=torch.long)
    pos = torch.zeros((n, S), dtype=torch.long)
    for i, (p, st, r) in enumerate(zip(prompts, states, reuse, strict=True)):
        row = row0 + i
        for li in range(len(batch.keys)):
            batch.keys[li][row, :, end - S - r:end - S] = st.keys[li][:, :r]
            batch.values[li][row, :, end - S - r:end - S] = st.values[li][:, :r]
        batch.mask[row, end - S - r:end - S] = True
        s = len(p) - r
        ids[i, S - s:] = torch.tensor(list(p[r:]), dtype=torch.long)
        pos[i, S - s:] = torch.arange(r, len(p))
        batch.mask[row, end - s:end] = True
    rows, first = slice(row0, row0 + n), end - P - S
    cache = _preallocated_cache([k[rows, :, first:] for k in batch.keys], [v[rows, :, first:] for v in batch.values], P)
    logits = forward(ids.to(device), batch.mask[rows, first:end], pos.to(device), cache, 1)
    return logits[:, -1, :]


def cache_kwarg(model: torch.nn.Module) -> str:
    """transformers 5 renamed `past_key_values` to `cache`; accept either generation."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    stop_ids: Sequence[int],
    pad_id: int,
    sampling: SamplingConfig = SamplingConfig(),
    seeds: Sequence[int] | None = None,
    prefill_chunk_tokens: int = 2048,
    prefixes: Sequence[PrefixState | None] | None = None,
    return_states: bool = False,
    lean_forward: bool = True,
    defer_share: int = 0,
    resume: Sequence[Generation | None] | None = None,
) -> list[Generation]:
    """Generate a continuation for every prompt (lists of token ids) in one batch.

    `prefill_chunk_tokens` bounds the padded tokens of one prefill forward pass.
    `prefixes[i]`, when given, holds K/V of tokens row i processed before; the longest
    common prefix with `prompts[i]` is reused instead of recomputed. With `return_states`,
    each Generation carries the PrefixState of its prompt and generated tokens (all but the
    last, which was sampled but never fed back), to pass as its next call's prefix.
    `lean_forward=False` runs a Llama model through its own forward instead of
    lm/llama_forward.py (the same logits, more Python per call).

    Continuous batching across calls: with `defer_share` = d > 0, the call returns once at
    most 1/d of its rows are still generating (when it has at least d rows), and those come
    back `deferred`, with their tokens so far and (always) their state. A caller with other
    work for the finished rows (an agent loop's next turns) passes a deferred row back on a
    later call as `resume[i]`, with `prompts[i]` its prompt followed by its tokens so far:
    the row goes on where it stopped (its tokens, log-probs, token budget and sampling noise
    carry over; only the last token is prefilled), decoding beside the other rows' new
    turns instead of alone in a tail of one-row passes. The tokens are what one call would
    have generated, up to the float rounding of a different batch.
    """
    n = len(prompts)
    if n == 0:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = next(model.parameters()).device
    seeds = list(seeds) if seeds is not None else list(range(n))
    resume = list(resume) if resume is not None else [None] * n
    for i, done in enumerate(resume):
        if done is None:
            continue
        ends_prompt = list(prompts[i][-len(done.token_ids):]) == done.token_ids
        if not (done.deferred and ends_prompt and len(done.token_ids) < sampling.max_new_tokens):
            raise ValueError(f"resume[{i}] is not a deferred generation whose tokens end prompts[{i}] "
                             f"with budget left of max_new_tokens={sampling.max_new_tokens}")
    gens = {i: resume[i].generator if resume[i] is not None
            else torch.Generator().manual_seed(int(seeds[i]) & 0x7FFFFFFFFFFFFFFF) for i in range(n)}
    # How many tokens each row may still generate (a resumed row has spent some).
    budget = [sampling.max_new_tokens - (len(r.token_ids) if r is not None else 0) for r in resume]
    prefixes = list(prefixes) if prefixes is not None else [None] * n
    # Reuse at most all but the last prompt token: its logits are needed.
    reuse = [min(_common_prefix(st.ids, p), len(p) - 1) if st is not None else 0
             for st, p in zip(prefixes, prompts, strict=True)]
    fresh = sorted((i for i in range(n) if reuse[i] == 0), key=lambda i: -len(prompts[i]))
    cont = [i for i in range(n) if reuse[i] > 0]

    was_training = model.training
    model.eval()
    forward = _forward_of(model, lean_forward)
    # Longest new part first, in chunks of similar length: one long observation would
    # otherwise pad every row's new tokens to its length (measured: half the prefilled
    # positions were padding, and prefill was a third of a rollout step).
    cont.sort(key=lambda i: -(len(prompts[i]) - reuse[i]))
    cont_chunks = [[cont[j] for j in chunk]
                   for chunk in _chunks([len(prompts[i]) - reuse[i] for i in cont], prefill_chunk_tokens)]
    width = max([len(prompts[i]) for i in fresh]
                + [sum(_extend_widths([prompts[i] for i in c], [reuse[i] for i in c])) for c in cont_chunks])
    # The attention mask grows one column per token inside the buffer's room.
    batch = _Batch(width, torch.zeros((n, width + sampling.max_new_tokens), dtype=torch.bool, device=device))
    first_logits = []
    if fresh:
        first_logits.append(_prefill_fresh(forward, [prompts[i] for i in fresh], pad_id, device,
                                           prefill_chunk_tokens, batch, 0))
    row0 = len(fresh)
    for rows_ in cont_chunks:
        first_logits.append(_prefill_extend(forward, [prompts[i] for i in rows_], [prefixes[i] for i in rows_],
                                            [reuse[i] for i in rows_], pad_id, device, batch, row0))
        row0 += len(rows_)
    mask_buffer = batch.mask
    mask = mask_buffer[:, :width]
    cache = _preallocated_cache(batch.keys, batch.values, width)
    row_ids = fresh + cont                          # original index of each live row
    rows = torch.tensor(row_ids, device=device)
    last_pos = torch.tensor([len(prompts[i]) - 1 for i in row_ids], device=device)
    stops = torch.tensor(sorted(set(stop_ids)), device=device)
    # Each step's tokens and log-probs go into [prompt, step] buffers, read out once at the
    # end: no Python work per row and token (a row's tokens after its stop are cut off then).
    max_new = sampling.max_new_tokens
    out_tokens = torch.zeros((n, max_new), dtype=torch.long, device=device)
    out_logps = torch.zeros((n, max_new), dtype=torch.float32, device=device)
    lengths = [0] * n
    stopped = [False] * n
    states: list[PrefixState | None] = [None] * n

    deferred = [False] * n

    def finish(j: int, r: int, n_tokens: int, hit_stop: bool, defer: bool = False) -> None:
        lengths[r], stopped[r], deferred[r] = n_tokens, hit_stop, defer
        if return_states or defer:
            # The row's real positions, in order: its prompt and all generated tokens but
            # the one just sampled (index_select copies: the state owns its memory).
            real = mask[j].nonzero().squeeze(-1)
            states[r] = PrefixState(ids=list(prompts[r]) + out_tokens[r, :n_tokens - 1].tolist(),
                                    keys=[layer.keys[j].index_select(1, real) for layer in cache.layers],
                                    values=[layer.values[j].index_select(1, real) for layer in cache.layers])

    alive = torch.ones(len(row_ids), dtype=torch.bool, device=device)
    n_alive = len(row_ids)
    # Rows out of budget at each step (a resumed row has less of it left).
    out_of_budget: dict[int, list[int]] = {}
    for r in range(n):
        out_of_budget.setdefault(budget[r] - 1, []).append(r)
    last_step = max(budget) - 1
    defer_at = n // defer_share if defer_share > 0 else 0
    logits = torch.cat(first_logits)
    for step in range(last_step + 1):
        logits = logits[:, -1, :] if logits.dim() == 3 else logits
        logits = logits if logits.dtype == torch.float32 else logits.float()
        logp = logits.log_softmax(-1)
        tok = _choose(logits, sampling, [gens[r] for r in row_ids] if sampling.temperature else ())
        out_tokens[rows, step] = tok
        out_logps[rows, step] = logp.gather(-1, tok[:, None]).squeeze(-1)
        hit = torch.isin(tok, stops) & alive
        finished = hit.nonzero().squeeze(-1).tolist()   # usually none: one sync per step
        for j in finished:
            finish(j, row_ids[j], step + 1, True)
        if finished:
            alive &= ~hit
            n_alive -= len(finished)
        spent = out_of_budget.get(step)
        if spent:
            spent_rows = set(spent)
            for j in alive.nonzero().squeeze(-1).tolist():
                if row_ids[j] in spent_rows:
                    finish(j, row_ids[j], step + 1, False)
                    alive[j] = False
                    n_alive -= 1
        if 0 < n_alive <= defer_at and step < last_step:
            for j in alive.nonzero().squeeze(-1).tolist():
                finish(j, row_ids[j], step + 1, False, defer=True)
            n_alive = 0
        if n_alive == 0:
            break
        # Finished rows leave the batch once they are an eighth of it: dropping rows copies the
        # whole cache, and until then a finished row costs only its share of a forward pass
        # (its tokens are computed and discarded).
        if (len(row_ids) - n_alive) * DROP_FINISHED_SHARE >= len(row_ids):
            keep_list = alive.nonzero().squeeze(-1).tolist()
            keep = torch.tensor(keep_list, device=device)
            cache.batch_select_indices(keep)
            row_ids = [row_ids[j] for j in keep_list]
            rows, tok, last_pos, alive = rows[keep], tok[keep], last_pos[keep], alive[keep]
            mask_buffer = mask_buffer[keep]
        mask_buffer[:, width] = True
        width += 1
        mask = mask_buffer[:, :width]
        last_pos = last_pos + 1
        logits = forward(tok[:, None], mask, last_pos[:, None], cache)
    token_rows, logp_rows = out_tokens.tolist(), out_logps.tolist()
    results = []
    for r in range(n):
        done = resume[r]
        tokens, logps = token_rows[r][:lengths[r]], logp_rows[r][:lengths[r]]
        if done is not None:
            tokens, logps = done.token_ids + tokens, done.logprobs + logps
        results.append(Generation(tokens, logps, stopped[r], states[r], deferred[r],
                                  gens[r] if deferred[r] else None))
    if was_training:
        model.train()
    return results

"""Batched generation with a KV cache, returning the sampled tokens' log-probabilities.

Prompts are prefilled in chunks of similar length (sorted, left-padded within a chunk:
little padding, and attention matrices that stay in cache), then their key/value states
are laid side by side, right-aligned, in one preallocated cache; every row then decodes
one token per forward pass. The cache is written in place (transformers' DynamicCache
concatenates, copying the whole cache at every token: most of a CPU decode step). Rows
that hit a stop token leave the batch (their cache rows are dropped), so a long action
does not make the short ones pay. Sampling is per-row reproducible: each row draws its noise from its own generator
seeded by the caller, so an episode samples the same tokens however it was batched
(up to float rounding of batched matmuls).

Log-probabilities are those of the model's own distribution (temperature 1, no top-p),
i.e. what a forward pass over the same tokens gives: the quantity RL importance ratios
and distillation losses need. Sampling itself uses temperature and top-p.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0     # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")


@dataclass
class Generation:
    token_ids: list[int]         # generated tokens, the stop token included if it was hit
    logprobs: list[float]        # log p(token) under the model, one per generated token
    stopped: bool                # hit a stop token (False: ran out of max_new_tokens)


def _choose(logits: torch.Tensor, cfg: SamplingConfig, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """Next token per row: argmax, or Gumbel-max over the temperature/top-p distribution."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    scaled = logits / cfg.temperature
    if cfg.top_p < 1.0:
        sorted_logits, order = scaled.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop_sorted = probs.cumsum(-1) - probs >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    u = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in gens]).to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-10)))
    return (scaled + gumbel).argmax(-1)


def _preallocated_layer_class() -> type:
    """A DynamicLayer that writes into a preallocated buffer instead of concatenating."""
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
            self._k, self._v = self._k[indices], self._v[indices]
            self._expose()

    return PreallocatedLayer


def _prefill(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
             extra: int, chunk_tokens: int) -> tuple[Any, torch.Tensor]:
    """Prefill left-padded rows (already sorted by length) chunk by chunk; return one cache
    holding every row right-aligned at the full width, with room for `extra` tokens, and the
    last position's logits of every row."""
    from transformers import DynamicCache

    n, width = ids.shape
    ckw = cache_kwarg(model)
    lengths = mask.sum(-1).tolist()
    layers: list[tuple[torch.Tensor, torch.Tensor]] = []
    logits = []
    start = 0
    while start < n:
        # A chunk is as many rows as fit `chunk_tokens` at the width of its longest row.
        w = int(max(lengths[start:start + 1]))
        stop = start + 1
        while stop < n and (stop - start + 1) * max(w, lengths[stop]) <= chunk_tokens:
            w = max(w, lengths[stop])
            stop += 1
        sl = slice(start, stop)
        part = DynamicCache()
        out = model(input_ids=ids[sl, width - w:], attention_mask=mask[sl, width - w:],
                    position_ids=pos[sl, width - w:], use_cache=True, logits_to_keep=1, **{ckw: part})
        logits.append(out.logits[:, -1, :])
        for li, layer in enumerate(part.layers):
            k, v = layer.keys, layer.values
            if len(layers) <= li:
                shape = (n, k.shape[1], width + extra, k.shape[3])
                layers.append((k.new_zeros(shape), v.new_zeros(shape)))
            layers[li][0][sl, :, width - w: width] = k
            layers[li][1][sl, :, width - w: width] = v
        start = stop
    layer_cls = _preallocated_layer_class()
    cache = DynamicCache()
    cache.layers = [layer_cls(bufs, width) for bufs in layers]
    cache.layer_class_to_replicate = None
    return cache, torch.cat(logits)


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
    prefill_chunk_tokens: int = 4096,
) -> list[Generation]:
    """Generate a continuation for every prompt (lists of token ids) in one batch.

    `prefill_chunk_tokens` bounds the padded tokens of one prefill forward pass.
    """
    n = len(prompts)
    if n == 0:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = next(model.parameters()).device
    seeds = list(seeds) if seeds is not None else list(range(n))
    # Rows are processed longest first (so prefill chunks hold similar lengths); `rows`
    # maps each live row back to its prompt's index.
    order = sorted(range(n), key=lambda i: -len(prompts[i]))
    gens = {i: torch.Generator().manual_seed(int(seeds[i]) & 0x7FFFFFFFFFFFFFFF) for i in range(n)}
    width = len(prompts[order[0]])
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for j, i in enumerate(order):
        p = prompts[i]
        ids[j, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[j, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    stops = torch.tensor(sorted(set(stop_ids)), device=device)

    was_training = model.training
    model.eval()
    ckw = cache_kwarg(model)
    cache, first_logits = _prefill(model, ids, mask, pos, sampling.max_new_tokens, prefill_chunk_tokens)
    rows = torch.tensor(order, device=device)      # original index of each live row
    last_pos = pos[:, -1]
    results = [Generation([], [], False) for _ in range(n)]
    out = None
    for _ in range(sampling.max_new_tokens):
        logits = (first_logits if out is None else out.logits[:, -1, :]).float()
        logp = logits.log_softmax(-1)
        tok = _choose(logits, sampling, [gens[int(r)] for r in rows.tolist()])
        tok_logp = logp.gather(-1, tok[:, None]).squeeze(-1)
        hit = torch.isin(tok, stops)
        for j, r in enumerate(rows.tolist()):
            results[r].token_ids.append(int(tok[j]))
            results[r].logprobs.append(float(tok_logp[j]))
            if hit[j]:
                results[r].stopped = True
        keep = (~hit).nonzero().squeeze(-1)
        if keep.numel() == 0:
            break
        if keep.numel() < rows.numel():
            cache.batch_select_indices(keep)
            rows, tok, mask, last_pos = rows[keep], tok[keep], mask[keep], last_pos[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        last_pos = last_pos + 1
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                    use_cache=True, **{ckw: cache})
    if was_training:
        model.train()
    return results

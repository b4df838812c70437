"""Batched generation with a KV cache, returning the sampled tokens' log-probabilities.

All prompts of a batch are left-padded and prefilled in one forward pass; then every row
decodes one token per forward pass, reusing the cache. Rows that hit a stop token leave
the batch (their cache rows are dropped), so a long action does not make the short ones
pay. Sampling is per-row reproducible: each row draws its noise from its own generator
seeded by the caller, so an episode samples the same tokens however it was batched
(up to float rounding of batched matmuls).

Log-probabilities are those of the model's own distribution (temperature 1, no top-p),
i.e. what a forward pass over the same tokens gives: the quantity RL importance ratios
and distillation losses need. Sampling itself uses temperature and top-p.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
) -> list[Generation]:
    """Generate a continuation for every prompt (lists of token ids) in one batch."""
    from transformers import DynamicCache

    n = len(prompts)
    if n == 0:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = next(model.parameters()).device
    seeds = list(seeds) if seeds is not None else list(range(n))
    gens = [torch.Generator().manual_seed(int(s) & 0x7FFFFFFFFFFFFFFF) for s in seeds]
    width = max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    stops = torch.tensor(sorted(set(stop_ids)), device=device)

    was_training = model.training
    model.eval()
    cache = DynamicCache()
    ckw = cache_kwarg(model)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                logits_to_keep=1, **{ckw: cache})
    rows = torch.arange(n, device=device)          # original index of each live row
    last_pos = pos[:, -1]
    results = [Generation([], [], False) for _ in range(n)]
    for _ in range(sampling.max_new_tokens):
        logits = out.logits[:, -1, :].float()
        logp = logits.log_softmax(-1)
        tok = _choose(logits, sampling, [gens[int(r)] for r in rows])
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

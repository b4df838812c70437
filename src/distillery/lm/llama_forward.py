"""A lean forward pass for Llama-architecture causal LMs, for the generation loop.

transformers' `LlamaForCausalLM.forward` spends more per call in generic Python than a
small model spends in arithmetic: kwargs plumbing through five decorators, a mask factory,
output capture, the attention-function registry. A rollout calls it hundreds of times
per step batch, most of them one-token decode passes over a handful of rows (measured
on the warm-up student: 0.9 ms per call for 0.3 ms of tensor work).

`LlamaForward(model)` runs the same operations in the same order on the model's own
modules and functions (norms, projections, rotary embedding, MLPs, head), so its logits
and the K/V it writes into the cache are bit-identical to the model's forward;
tests/lm/test_llama_forward.py holds it to that. Only the plumbing between them is done
here directly: the SDPA mask (transformers' own rules: no mask where padding is absent
and SDPA's `is_causal` can stand in), grouped-query packing, and the cache update.

`fast_forward(model)` returns one for a model it can run (a Llama with SDPA attention,
plain or PEFT-wrapped), else None: the caller then uses the model's own forward.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

# The model's architecture and attention implementation this forward reproduces.
_SUPPORTED_MODEL_TYPE = "llama"
_SUPPORTED_ATTENTION = "sdpa"

_instances: weakref.WeakKeyDictionary[torch.nn.Module, LlamaForward] = weakref.WeakKeyDictionary()


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (its LoRA layers stay in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports(model: torch.nn.Module) -> bool:
    base = _base_model(model)
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != _SUPPORTED_MODEL_TYPE:
        return False
    return (getattr(cfg, "_attn_implementation", None) == _SUPPORTED_ATTENTION
            and getattr(cfg, "pretraining_tp", 1) == 1
            and hasattr(base, "model") and hasattr(base.model, "rotary_emb"))


def fast_forward(model: torch.nn.Module) -> LlamaForward | None:
    """The lean forward of `model` (made once per model), or None if it cannot run it.
    Checked on every call: a model switched to another attention implementation since
    gets its own forward again."""
    if not supports(model):
        return None
    inst = _instances.get(model)
    if inst is None:
        inst = _instances[model] = LlamaForward(model)
    return inst


class LlamaForward(torch.nn.Module):
    """`forward(input_ids, attention_mask, position_ids, cache, logits_to_keep)` -> logits,
    as `model(...).logits` with the same arguments. A module (holding no parameters of its
    own) so that forward hooks, e.g. a benchmark's timer, see its calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        base = _base_model(model)
        cfg = base.config
        self._model = weakref.ref(base)       # no second owner of the weights, no cycle
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.n_rep = self.n_heads // self.n_kv_heads
        self.scaling = self.head_dim ** -0.5
        # transformers' own rotary and GQA helpers, imported here so that importing this
        # module (and lm.generate) does not import transformers.
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

        self._apply_rotary = apply_rotary_pos_emb
        self._repeat_kv = repeat_kv

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor,
                cache: Any, logits_to_keep: int = 0) -> torch.Tensor:
        base = self._model()
        if base is None:
            raise RuntimeError("the model this forward pass belonged to no longer exists")
        body = base.model
        batch, q_len = input_ids.shape
        hidden = body.embed_tokens(input_ids)
        past = cache.get_seq_length()
        kv_len = past + q_len
        mask = _sdpa_mask(attention_mask, batch, q_len, kv_len, past, hidden.device)

        cos, sin = body.rotary_emb(hidden, position_ids)

        shape = (batch, q_len, -1, self.head_dim)
        for li, layer in enumerate(body.layers):
            attn = layer.self_attn
            residual = hidden
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(shape).transpose(1, 2)
            k = attn.k_proj(x).view(shape).transpose(1, 2)
            v = attn.v_proj(x).view(shape).transpose(1, 2)
            q, k = self._apply_rotary(q, k, cos, sin)
            k, v = cache.update(k, v, li)
            out = self._attention(q, k, v, mask, q_len)
            hidden = residual + attn.o_proj(out.reshape(batch, q_len, -1).contiguous())
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = body.norm(hidden)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:, :]
        return base.lm_head(hidden)

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   q_len: int) -> torch.Tensor:
        """transformers' `sdpa_attention_forward` on the CPU/CUDA path, grouped-query
        attention included; returns [batch, q_len, heads, head_dim]."""
        kwargs = {}
        if self.n_rep > 1:
            if mask is None:
                kwargs["enable_gqa"] = True
            elif q_len == 1:
                q = q.reshape(q.shape[0], self.n_kv_heads, self.n_rep, q.shape[-1])
                if mask.shape[1] != 1:
                    mask = mask.reshape(mask.shape[0], self.n_kv_heads, self.n_rep, mask.shape[-1])
            else:
                k = self._repeat_kv(k, self.n_rep)
                v = self._repeat_kv(v, self.n_rep)
        is_causal = q_len > 1 and mask is None
        if is_causal and k.shape[2] > q_len:
            k, v = k[:, :, :q_len], v[:, :, :q_len]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=self.scaling,
                                             is_causal=is_causal, **kwargs)
        out = out.reshape(out.shape[0], -1, q_len, v.shape[-1])
        return out.transpose(1, 2).contiguous()


def _sdpa_mask(attention_mask: torch.Tensor | None, batch: int, q_len: int, kv_len: int, past: int,
               device: torch.device) -> torch.Tensor | None:
    """transformers' causal SDPA mask: None where SDPA's own causal flag (or no mask) gives
    the same attention, else a [batch, 1, q_len, kv_len] boolean mask, True = attend."""
    padding = None
    if attention_mask is not None:
        padding = attention_mask.bool()
        if padding.shape[-1] < kv_len:   # positions past the mask are masked, as transformers pads it
            padding = F.pad(padding, (0, kv_len - padding.shape[-1]))
        padding = padding[:, :kv_len]
    if q_len == 1 or kv_len == q_len:
        if padding is None or bool(padding.all()):
            return None
    if past == 0 and (padding is None or (bool(padding[:, :q_len].all()) and not bool(padding[:, q_len:].any()))):
        return None
    q_pos = torch.arange(q_len, device=device) + past
    kv_pos = torch.arange(kv_len, device=device)
    causal = kv_pos[None, :] <= q_pos[:, None]
    mask = causal[None, None] if padding is None else causal[None, None] & padding[:, None, None, :]
    return mask.expand(batch, 1, q_len, kv_len)

"""A lean forward pass for Llama-architecture causal LMs, for the generation loop.

transformers' `LlamaForCausalLM.forward` spends more per call in generic Python than a
small model spends in arithmetic: kwargs plumbing through five decorators, a mask factory,
output capture, the attention-function registry. A rollout calls it hundreds of times
per step batch, most of them one-token decode passes over a handful of rows (measured
on the warm-up student: 0.9 ms per call for 0.3 ms of tensor work).

`LlamaForward(model)` does the same arithmetic in the same order on the model's own
weights and modules, so its logits and the K/V it writes into the cache are bit-identical
to the model's forward; tests/lm/test_llama_forward.py holds it to that (float32 and
bfloat16). A one-token pass (the decode loop's) has its own short path: 2-D hidden
states and no layout operations that one position does not need. Where a module is
transformers' own class (RMSNorm, the SwiGLU MLP, a plain Linear or Embedding), its
operations are called directly rather than through `nn.Module.__call__`; anything else (a
LoRA layer, another norm) is called as the module. The rotary cos/sin are looked up in a
table the model's rotary module computed once, where they depend on the position alone.
At the warm-up student's shape on a 2-core AVX2 EPYC this took a one-row decode pass from
2.7-3.2 to 2.3-2.6 ms (docs/performance.md). The plumbing between the modules is done
here: the SDPA mask (transformers' own rules: no mask where padding is absent and SDPA's
`is_causal` can stand in), grouped-query packing, and the cache update. A model with
hooks on its submodules (e.g. accelerate's offloading) keeps its own forward, since
calling operations directly would skip them.

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
# Rotary types whose cos/sin depend on more than the position (the sequence length seen):
# they are computed by the module on every pass instead of looked up.
_POSITION_DEPENDENT_ROPE = frozenset({"dynamic", "longrope"})

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
            and hasattr(base, "model") and hasattr(base.model, "rotary_emb")
            and not any(_hooked(m) for m in base.modules() if m is not base))


def _hooked(module: torch.nn.Module) -> bool:
    """Hooks on a module (e.g. accelerate's offloading, a user's probe) that calling its
    operations directly would skip."""
    return bool(module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook"))


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
        # transformers' own rotary and GQA helpers and module classes, imported here so that
        # importing this module (and lm.generate) does not import transformers.
        from transformers.activations import SiLUActivation
        from transformers.models.llama.modeling_llama import (
            LlamaMLP,
            LlamaRMSNorm,
            repeat_kv,
        )

        self._repeat_kv = repeat_kv
        self._rms_norm_class = LlamaRMSNorm
        self._mlp_class = LlamaMLP
        self._silu_classes = (SiLUActivation, torch.nn.SiLU)
        # cos/sin per position, computed by the model's rotary module once (see _rotary).
        rotary = base.model.rotary_emb
        self._static_rotary = getattr(rotary, "rope_type", "default") not in _POSITION_DEPENDENT_ROPE
        self._rotary_tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._swap_index: dict[torch.device, torch.Tensor] = {}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor,
                cache: Any, logits_to_keep: int = 0) -> torch.Tensor:
        base = self._model()
        if base is None:
            raise RuntimeError("the model this forward pass belonged to no longer exists")
        batch, q_len = input_ids.shape
        if q_len == 1:
            return self._one_token(base, input_ids, attention_mask, position_ids, cache)
        body = base.model
        hidden = _embed(body.embed_tokens, input_ids)
        past = cache.get_seq_length()
        kv_len = past + q_len
        mask = _sdpa_mask(attention_mask, batch, q_len, kv_len, past, hidden.device)

        cos, sin = self._rotary(body.rotary_emb, hidden, position_ids)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)   # over the heads, as apply_rotary_pos_emb

        shape = (batch, q_len, -1, self.head_dim)
        for li, layer in enumerate(body.layers):
            attn = layer.self_attn
            residual = hidden
            x = self._norm(layer.input_layernorm, hidden)
            q = _linear(attn.q_proj, x).view(shape).transpose(1, 2)
            k = _linear(attn.k_proj, x).view(shape).transpose(1, 2)
            v = _linear(attn.v_proj, x).view(shape).transpose(1, 2)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            k, v = cache.update(k, v, li)
            out = self._attention(q, k, v, mask, q_len)
            hidden = residual + _linear(attn.o_proj, out.reshape(batch, q_len, -1).contiguous())
            residual = hidden
            hidden = residual + self._mlp(layer.mlp, self._norm(layer.post_attention_layernorm, hidden))
        hidden = self._norm(body.norm, hidden)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:, :]
        return _linear(base.lm_head, hidden)

    def _one_token(self, base: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   position_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        """The pass above for one new token per row, the decode loop's pass: hidden states
        stay [batch, hidden] and the layout operations one position does not need (the
        transposes around attention, the copies that make them contiguous) are left out.
        The same products, sums and elementwise operations on the same values, so the same
        bits; a one-row pass is mostly per-operation overhead on the CPU, and this one
        dispatches a fifth fewer aten operations (docs/performance.md)."""
        body = base.model
        batch = input_ids.shape[0]
        hidden = _embed(body.embed_tokens, input_ids[:, 0])
        past = cache.get_seq_length()
        mask = _sdpa_mask(attention_mask, batch, 1, past + 1, past, hidden.device)
        cos, sin = self._rotary(body.rotary_emb, hidden, position_ids)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)   # [batch, 1 (heads), 1, head_dim]
        heads = (batch, -1, 1, self.head_dim)          # [batch, heads, 1, head_dim]: one position
        for li, layer in enumerate(body.layers):
            attn = layer.self_attn
            x = self._norm(layer.input_layernorm, hidden)
            q = self._rotate(_linear(attn.q_proj, x).view(heads), cos, sin)
            k = self._rotate(_linear(attn.k_proj, x).view(heads), cos, sin)
            k, v = cache.update(k, _linear(attn.v_proj, x).view(heads), li)
            out = self._attention(q, k, v, mask, 1)
            hidden = hidden + _linear(attn.o_proj, out.reshape(batch, -1))
            hidden = hidden + self._mlp(layer.mlp, self._norm(layer.post_attention_layernorm, hidden))
        return _linear(base.lm_head, self._norm(body.norm, hidden))[:, None, :]

    # The model's modules, called directly where they are transformers' own classes (their
    # operations, in their order, without nn.Module's call machinery: a one-row decode pass is
    # mostly such per-call overhead on the CPU), else through the module.

    def _norm(self, norm: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        if type(norm) is not self._rms_norm_class:
            return norm(hidden)
        cast = hidden.dtype != torch.float32   # a float32 norm skips two no-op casts (a dispatch each)
        x = hidden.to(torch.float32) if cast else hidden
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + norm.variance_epsilon)
        return norm.weight * (x.to(hidden.dtype) if cast else x)

    def _mlp(self, mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if type(mlp) is not self._mlp_class:
            return mlp(x)
        gate = _linear(mlp.gate_proj, x)
        gate = F.silu(gate) if type(mlp.act_fn) in self._silu_classes else mlp.act_fn(gate)
        return _linear(mlp.down_proj, gate * _linear(mlp.up_proj, x))

    def _rotary(self, rotary: torch.nn.Module, hidden: torch.Tensor,
                position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary module's cos, and its sin with `rotate_half`'s sign folded in (see
        _rotate), for `position_ids`. Where they depend on the position alone, they are
        looked up in a table the module computed for positions 0..n-1 (the same elementwise
        operations on the same values, so the same bits); the table grows by doubling when a
        later position needs it."""
        if not self._static_rotary:
            cos, sin = rotary(hidden, position_ids)
            return cos, _fold_rotate_sign(sin)
        key = (hidden.device, hidden.dtype)
        table = self._rotary_tables.get(key)
        needed = int(position_ids.max()) + 1
        if table is None or table[0].shape[0] < needed:
            size = max(needed, 2 * table[0].shape[0] if table is not None else 256)
            positions = torch.arange(size, device=hidden.device)[None]
            cos, sin = rotary(hidden, positions)
            table = self._rotary_tables[key] = (cos[0], _fold_rotate_sign(sin[0]))
        return F.embedding(position_ids, table[0]), F.embedding(position_ids, table[1])

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
        """transformers' `x * cos + rotate_half(x) * sin`. rotate_half(x) is x's halves
        swapped with the new first half negated; the negation is in `signed_sin` instead
        ((-a) * b and a * (-b) round alike), so the swap is one operation, not two slices, a
        negation and a concatenation: a gather for one position (the decode pass), a roll
        for many (the gather is slow over long rows)."""
        half = self.head_dim // 2
        if x.shape[-2] == 1:
            index = self._swap_index.get(x.device)
            if index is None:
                index = self._swap_index[x.device] = torch.arange(self.head_dim, device=x.device).roll(half)
            swapped = x.index_select(-1, index)
        else:
            swapped = x.roll(half, -1)
        return (x * cos) + (swapped * signed_sin)

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   q_len: int) -> torch.Tensor:
        """transformers' `sdpa_attention_forward` on the CPU/CUDA path, grouped-query
        attention included; returns [batch, q_len, heads, head_dim] (for one position, a tensor
        whose rows read in that order: the caller reshapes it to [batch, heads x head_dim])."""
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
        if q_len == 1:   # one position: [batch, heads, 1, head_dim] is laid out as [batch, 1, heads, head_dim]
            return out
        out = out.reshape(out.shape[0], -1, q_len, v.shape[-1])
        return out.transpose(1, 2).contiguous()


def _fold_rotate_sign(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated: rotate_half's negation, applied to sin (see _rotate)."""
    half = sin.shape[-1] // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def _linear(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if type(layer) is torch.nn.Linear:
        return F.linear(x, layer.weight, layer.bias)
    return layer(x)   # a LoRA layer, or any other wrapper: its own forward


def _embed(embedding: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    if type(embedding) is torch.nn.Embedding:
        return F.embedding(ids, embedding.weight, embedding.padding_idx)
    return embedding(ids)


def _sdpa_mask(attention_mask: torch.Tensor | None, batch: int, q_len: int, kv_len: int, past: int,
               device: torch.device) -> torch.Tensor | None:
    """transformers' causal SDPA mask: None where SDPA's own causal flag (or no mask) gives
    the same attention, else a [batch, 1, q_len, kv_len] boolean mask, True = attend."""
    padding = None
    if attention_mask is not None:
        padding = attention_mask if attention_mask.dtype == torch.bool else attention_mask.bool()
        if padding.shape[-1] < kv_len:   # positions past the mask are masked, as transformers pads it
            padding = F.pad(padding, (0, kv_len - padding.shape[-1]))
        elif padding.shape[-1] > kv_len:
            padding = padding[:, :kv_len]
    if q_len == 1 or kv_len == q_len:
        if padding is None or bool(padding.all()):
            return None
    if q_len == 1:   # one new token sees every earlier position: the mask is the padding's
        return padding[:, None, None, :]
    if past == 0 and (padding is None or (bool(padding[:, :q_len].all()) and not bool(padding[:, q_len:].any()))):
        return None
    q_pos = torch.arange(q_len, device=device) + past
    kv_pos = torch.arange(kv_len, device=device)
    causal = kv_pos[None, :] <= q_pos[:, None]
    mask = causal[None, None] if padding is None else causal[None, None] & padding[:, None, None, :]
    return mask.expand(batch, 1, q_len, kv_len)

"""The decoder's final hidden states at selected positions, its last layer run only there.

A training loss on action tokens reads the decoder's output at the positions that predict a
target (23% of the agent track's warm-up tokens, 35% of the training bench's). Every layer but
the last must run at every position (the next layer's keys and values need them), but the last layer's
output is read only at the selected ones: there it needs its keys and values everywhere and
its queries, attention output, MLP and norms only at the selected rows. On a 2-layer model
that is about a quarter of the decoder's work, on a 4-layer one about an eighth.

The values are the same operations on the same rows as transformers' `LlamaModel.forward`
followed by a gather (the first layers are transformers' own modules called as its model
calls them); what differs is the shape of the last layer's matrix products and attention,
so a BLAS may round a result differently (on the CPU measured the forward values came out
bit-identical, and the weight gradients, which sum over fewer rows, differed in the last
bits). That is why the training loop uses it only where asked
(`train(..., last_layer_at_targets=True)`).

    hidden = decoder_at_targets(model, input_ids, rows, cols)   # [len(rows), hidden_size]
    logits = model.get_output_embeddings()(hidden)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from distillery.lm.llama_forward import supports as lean_forward_supports


def supports(model: Any) -> bool:
    """Whether `decoder_at_targets` computes what the model's own forward does: a Llama with
    SDPA attention and no hooks (plain or PEFT-wrapped), without attention dropout."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return lean_forward_supports(base) and not float(getattr(base.config, "attention_dropout", 0.0) or 0.0)


def decoder_at_targets(model: Any, input_ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The final (normed) hidden states of `model`'s decoder over `input_ids` (a right-padded
    or unpadded batch, causal attention without a padding mask) at positions
    ``(rows[i], cols[i])``, in that order: ``model.get_decoder()(input_ids).last_hidden_state[rows, cols]``.

    Raises ValueError for a model `supports` rejects."""
    if not supports(model):
        raise ValueError("decoder_at_targets needs a Llama model with SDPA attention, no hooks and no "
                         "attention dropout; call the model's own forward instead")
    from transformers.masking_utils import create_causal_mask
    from transformers.models.llama.modeling_llama import repeat_kv, rotate_half

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = base.model
    batch, length = input_ids.shape
    hidden = body.embed_tokens(input_ids)
    # What LlamaModel.forward does before and through all but its last layer.
    position_ids = torch.arange(length, device=input_ids.device).unsqueeze(0)
    mask = create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=None, cache=None,
                              position_ids=position_ids)
    cos, sin = body.rotary_emb(hidden, position_ids=position_ids)
    layers = body.layers[: base.config.num_hidden_layers]
    for layer in layers[:-1]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin), position_ids=position_ids,
                       use_cache=False)

    # The last layer: keys and values at every position, the rest at the selected rows.
    layer = layers[-1]
    attn = layer.self_attn
    n_heads, n_kv = base.config.num_attention_heads, base.config.num_key_value_heads
    head_dim = getattr(base.config, "head_dim", None) or base.config.hidden_size // n_heads
    x = layer.input_layernorm(hidden)
    k = attn.k_proj(x).view(batch, length, n_kv, head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(batch, length, n_kv, head_dim).transpose(1, 2)
    cos_heads, sin_heads = cos.unsqueeze(1), sin.unsqueeze(1)
    k = (k * cos_heads) + (rotate_half(k) * sin_heads)

    # The selected queries, packed per batch row into `slots` (a row's selections in order);
    # a slot no selection fills attends position 0 alone and is never read back.
    n = rows.shape[0]
    counts = torch.bincount(rows, minlength=batch)
    slots = int(counts.max()) if n else 0
    slot = torch.arange(n, device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    q = attn.q_proj(x[rows, cols]).view(n, n_heads, head_dim)
    q = (q * cos[0, cols].unsqueeze(1)) + (rotate_half(q) * sin[0, cols].unsqueeze(1))
    packed = q.new_zeros(batch, slots, n_heads, head_dim)
    packed[rows, slot] = q
    q_pos = torch.zeros(batch, slots, dtype=torch.long, device=rows.device)
    q_pos[rows, slot] = cols
    visible = torch.arange(length, device=rows.device)[None, None, :] <= q_pos[:, :, None]
    groups = n_heads // n_kv
    out = F.scaled_dot_product_attention(packed.transpose(1, 2), repeat_kv(k, groups), repeat_kv(v, groups),
                                         attn_mask=visible[:, None], dropout_p=0.0, scale=attn.scaling)
    out = out.transpose(1, 2)[rows, slot].reshape(n, n_heads * head_dim)

    selected = hidden[rows, cols] + attn.o_proj(out)
    selected = selected + layer.mlp(layer.post_attention_layernorm(selected))
    return body.norm(selected)

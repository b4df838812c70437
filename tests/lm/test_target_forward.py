"""The decoder at selected positions, its last layer run only there, gives the full decoder's
outputs at those positions, and the same gradients up to rounding."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distillery.lm.target_forward import decoder_at_targets, supports

VOCAB, PAD = 64, 0
ROPES = {"default": None, "llama3": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 16}}


def llama(kv_heads: int, layers: int = 2, attn: str = "sdpa", rope: str = "default", dropout: float = 0.0,
          seed: int = 0) -> LlamaForCausalLM:
    extra = {"rope_parameters": ROPES[rope]} if ROPES[rope] else {}
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
                      initializer_range=0.2, pad_token_id=PAD, attn_implementation=attn,
                      attention_dropout=dropout, **extra)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def right_padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three rows of different lengths, right-padded; targets scattered over each row's
    positions (one row has a single one, at its start), none on padding."""
    g = torch.Generator().manual_seed(seed)
    lengths = [23, 9, 17]
    ids = torch.full((3, max(lengths)), PAD)
    selected = torch.zeros(3, max(lengths) - 1, dtype=torch.bool)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(1, VOCAB, (n,), generator=g)
        selected[r, : n - 1] = torch.rand(n - 1, generator=g) < 0.4
    selected[1] = False
    selected[1, 0] = True
    rows, cols = selected.nonzero(as_tuple=True)
    return ids, rows, cols


def whole(model: LlamaForCausalLM, ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return model.get_decoder()(input_ids=ids, attention_mask=None, use_cache=False).last_hidden_state[rows, cols]


@pytest.mark.parametrize(("kv_heads", "layers", "rope"), [(4, 2, "default"), (2, 2, "default"), (1, 3, "llama3"),
                                                         (2, 1, "default")])
def test_the_outputs_at_the_selected_positions_are_the_whole_decoders(kv_heads, layers, rope):
    model = llama(kv_heads, layers, rope=rope)
    ids, rows, cols = right_padded_batch()
    with torch.no_grad():
        ours, theirs = decoder_at_targets(model, ids, rows, cols), whole(model, ids, rows, cols)
    assert ours.shape == (len(rows), 32)
    # The same operations on the same rows; only the last layer's matrix shapes differ.
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_the_gradients_are_the_whole_decoders_up_to_rounding():
    grads = []
    ids, rows, cols = right_padded_batch(seed=1)
    for run in (decoder_at_targets, whole):
        model = llama(2, seed=3)
        logits = model.get_output_embeddings()(run(model, ids, rows, cols))
        torch.nn.functional.cross_entropy(logits, ids[rows, cols + 1]).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], rtol=1e-4, atol=1e-6, msg=name)
    # The last layer's query projection learns only from the selected positions: it has a gradient.
    assert grads[0]["model.layers.1.self_attn.q_proj.weight"].abs().sum() > 0


def test_a_lora_wrapped_model_runs_its_adapters_at_the_selected_positions():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(llama(2), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():   # non-zero adapters, so that skipping one would show
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    assert supports(model)
    ids, rows, cols = right_padded_batch(seed=2)
    with torch.no_grad():
        torch.testing.assert_close(decoder_at_targets(model, ids, rows, cols),
                                   whole(model.get_base_model(), ids, rows, cols), rtol=1e-5, atol=1e-6)


def test_a_model_it_cannot_run_is_refused_by_name():
    ids, rows, cols = right_padded_batch()
    for model in (llama(2, attn="eager"), llama(2, dropout=0.1)):
        assert not supports(model)
        with pytest.raises(ValueError, match="decoder_at_targets needs a Llama model with SDPA attention"):
            decoder_at_targets(model, ids, rows, cols)
    assert supports(llama(2))


def test_no_selected_position_gives_no_rows_and_a_gradient_of_zero():
    model = llama(2)
    ids, _, _ = right_padded_batch()
    none = torch.zeros(0, dtype=torch.long)
    hidden = decoder_at_targets(model, ids, none, none)
    assert hidden.shape == (0, 32)
    model.get_output_embeddings()(hidden).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())

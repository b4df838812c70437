"""The lean Llama forward gives the model's own logits and cache, bit for bit."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from distillery.lm.generate import SamplingConfig, cache_kwarg, generate
from distillery.lm.llama_forward import LlamaForward, fast_forward

VOCAB, PAD, STOP = 64, 0, 1


# Rotary variants beside the default: the lean forward calls the model's own rotary module.
ROPES = {
    "default": None,
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    # cos/sin that depend on the sequence length: computed by the module on every pass
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
}


def llama(kv_heads: int, seed: int = 0, attn: str = "sdpa", rope: str = "default") -> LlamaForCausalLM:
    extra = {"rope_parameters": ROPES[rope]} if ROPES[rope] else {}
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
                      initializer_range=0.05, pad_token_id=PAD, eos_token_id=STOP, bos_token_id=None,
                      attn_implementation=attn, **extra)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


# Prompts of different lengths: left padding in the fresh prefill, and one row alone.
PROMPTS = [[5, 9, 12, 7], [30], [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [40, 41, 17], [8] * 9]


@pytest.mark.parametrize(("kv_heads", "rope", "dtype"), [
    (4, "default", torch.float32), (2, "default", torch.float32), (2, "linear", torch.float32),
    (4, "llama3", torch.float32), (4, "dynamic", torch.float32),
    (2, "default", torch.bfloat16),   # the GPU path's precision: the norms cast to float32 and back
])
@torch.inference_mode()
def test_one_forward_pass_equals_the_models_logits_and_cache(kv_heads, rope, dtype):
    model = llama(kv_heads, rope=rope).to(dtype)
    ids = torch.tensor([[PAD, PAD, 5, 6, 7], [9, 8, 7, 6, 5]])
    mask = (ids != PAD).long()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ours_cache, theirs_cache = DynamicCache(), DynamicCache()
    ours = LlamaForward(model)(ids, mask, pos, ours_cache)
    theirs = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                   **{cache_kwarg(model): theirs_cache}).logits
    assert torch.equal(ours, theirs)
    for a, b in zip(ours_cache.layers, theirs_cache.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    # Decode steps on top (the one-token pass), with the padding still in the mask.
    for nxt in (torch.tensor([[3], [4]]), torch.tensor([[60], [2]]), torch.tensor([[7], [7]])):
        mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], -1)
        pos = pos[:, -1:] + 1
        ours = LlamaForward(model)(nxt, mask, pos, ours_cache)
        theirs = model(input_ids=nxt, attention_mask=mask, position_ids=pos, use_cache=True,
                       **{cache_kwarg(model): theirs_cache}).logits
        assert ours.shape == theirs.shape == (2, 1, VOCAB)
        assert torch.equal(ours, theirs)
    for a, b in zip(ours_cache.layers, theirs_cache.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("chunk", [4096, 3])   # one prefill pass, or chunks of a few rows
def test_generation_is_identical_with_the_lean_forward_and_the_models_own(kv_heads, chunk):
    model = llama(kv_heads)
    assert fast_forward(model) is not None
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=10)
    runs = []
    for lean in (True, False):
        first = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[1, 2, 3, 4, 5],
                         prefill_chunk_tokens=chunk, return_states=True, lean_forward=lean)
        # The next turn of each episode: its prompt and action, then a new observation,
        # prefilled on top of the reused K/V.
        follow = [p + g.token_ids + [20 + i] * (i + 1) for i, (p, g) in enumerate(zip(PROMPTS, first, strict=True))]
        second = generate(model, follow, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[6, 7, 8, 9, 10],
                          prefill_chunk_tokens=chunk, prefixes=[g.state for g in first], lean_forward=lean)
        runs.append(first + second)
    lean_run, own_run = runs
    assert sum(len(g.token_ids) for g in lean_run) > 3 * len(lean_run)   # real decoding happened
    for a, b in zip(lean_run, own_run, strict=True):
        assert a.token_ids == b.token_ids and a.stopped == b.stopped
        assert a.logprobs == b.logprobs          # bit for bit, not merely close
        if a.state is not None:
            assert all(torch.equal(x, y) for x, y in zip(a.state.keys, b.state.keys, strict=True))


def test_a_lora_wrapped_llama_runs_lean_with_its_adapters():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(llama(2), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                init_lora_weights=False)).eval()
    assert fast_forward(model) is not None
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8)
    lean = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, lean_forward=True)
    own = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, lean_forward=False)
    assert [g.token_ids for g in lean] == [g.token_ids for g in own]
    assert [g.logprobs for g in lean] == [g.logprobs for g in own]


@pytest.mark.parametrize("rope", ["default", "dynamic"])
@torch.inference_mode()
def test_positions_past_the_rotary_table_give_the_models_logits(rope):
    """The cos/sin table starts at 256 positions and grows: a pass at positions 250-649
    (past it, and past the config's maximum, where dynamic scaling kicks in) still matches."""
    model = llama(4, rope=rope)
    ours_forward = LlamaForward(model)
    for start in (0, 250, 600):
        ids = torch.tensor([[5, 6, 7, 8] * 10, [9, 8, 7, 6] * 10])
        pos = torch.arange(start, start + ids.shape[1]).expand(2, -1)
        ours = ours_forward(ids, None, pos, DynamicCache())
        theirs = model(input_ids=ids, position_ids=pos, use_cache=True, **{cache_kwarg(model): DynamicCache()}).logits
        assert torch.equal(ours, theirs), start


def test_models_it_cannot_reproduce_keep_their_own_forward():
    assert fast_forward(llama(4, attn="eager")) is None
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=64)).eval()
    assert fast_forward(gpt2) is None
    gens = generate(gpt2, PROMPTS[:2], stop_ids=[STOP], pad_id=PAD, sampling=SamplingConfig(max_new_tokens=3))
    assert all(len(g.token_ids) >= 1 for g in gens)


def test_a_model_switched_to_another_attention_gets_its_own_forward_again():
    model = llama(4)
    assert fast_forward(model) is not None
    model.set_attn_implementation("eager")
    assert fast_forward(model) is None


def test_a_model_with_hooks_on_its_layers_keeps_its_own_forward():
    """Calling a layer's operations directly would skip its hooks (a probe, accelerate's
    offloading), so such a model runs through its own forward, hooks and all."""
    model = llama(4)
    seen = []
    handle = model.model.layers[0].mlp.register_forward_hook(lambda *_: seen.append(1))
    assert fast_forward(model) is None
    generate(model, PROMPTS[:2], stop_ids=[STOP], pad_id=PAD, sampling=SamplingConfig(max_new_tokens=3))
    assert seen
    handle.remove()
    assert fast_forward(model) is not None

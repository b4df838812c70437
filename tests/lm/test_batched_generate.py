"""Batched KV-cached generation: its log-probs are the model's, batching changes nothing."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distillery.lm.generate import SamplingConfig, generate

VOCAB, PAD, STOP = 48, 0, 1


def tiny_model(init_std: float, seed: int = 0) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      initializer_range=init_std, pad_token_id=PAD, eos_token_id=STOP, bos_token_id=None)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


PROMPTS = [[5, 9, 12, 7], [30], [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [40, 41, 17]]


@pytest.mark.parametrize("sampling", [SamplingConfig(temperature=1.0, max_new_tokens=12),
                                      SamplingConfig(temperature=0.7, top_p=0.8, max_new_tokens=12)])
def test_logprobs_match_a_forward_pass_over_the_same_tokens(sampling):
    model = tiny_model(0.02)   # a flat distribution: sampling visits many different tokens
    gens = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[1, 2, 3, 4])
    for prompt, g in zip(PROMPTS, gens, strict=True):
        assert len(g.token_ids) == len(g.logprobs) >= 1
        seq = torch.tensor([prompt + g.token_ids])
        with torch.no_grad():
            logp = model(seq).logits[0].float().log_softmax(-1)
        # Token k of the generation is predicted at position len(prompt) - 1 + k; the
        # log-prob is the model's own (temperature 1, no top-p), whatever was sampled with.
        pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(g.token_ids))
        want = logp[pos, torch.tensor(g.token_ids)]
        torch.testing.assert_close(torch.tensor(g.logprobs), want, atol=1e-4, rtol=0)
    assert len({tuple(g.token_ids) for g in gens}) > 1


def test_batched_greedy_equals_one_prompt_at_a_time():
    # A wide init makes the distribution peaked, so no near-tie can flip under the float
    # rounding differences of different batch shapes.
    model = tiny_model(0.5)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=16)
    together = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling)
    alone = [generate(model, [p], stop_ids=[STOP], pad_id=PAD, sampling=sampling)[0] for p in PROMPTS]
    for a, b in zip(together, alone, strict=True):
        assert a.token_ids == b.token_ids and a.stopped == b.stopped
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


def test_sampling_is_reproducible_per_row_seed_whatever_the_batch():
    model = tiny_model(0.02)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8)
    full = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[10, 11, 12, 13])
    part = generate(model, PROMPTS[2:], stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[12, 13])
    assert [g.token_ids for g in full[2:]] == [g.token_ids for g in part]


def test_a_row_that_stops_leaves_the_batch_with_its_stop_token():
    model = tiny_model(0.5)
    first = generate(model, [PROMPTS[0]], stop_ids=[STOP], pad_id=PAD,
                     sampling=SamplingConfig(max_new_tokens=1))[0].token_ids[0]
    # Make that first greedy token the stop token: row 0 stops at once, row 1 runs on.
    gens = generate(model, [PROMPTS[0], PROMPTS[2]], stop_ids=[first], pad_id=PAD,
                    sampling=SamplingConfig(max_new_tokens=6))
    assert gens[0].token_ids == [first] and gens[0].stopped
    assert len(gens[1].token_ids) >= 1
    assert generate(model, [], stop_ids=[STOP], pad_id=PAD) == []
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], stop_ids=[STOP], pad_id=PAD)


@pytest.mark.parametrize("chunk", [1, 12, 30])
def test_chunked_prefill_into_one_preallocated_cache_changes_nothing(chunk):
    """Rows prefilled in length-sorted chunks of different widths, then decoded together
    from one right-aligned cache, give what one big prefill gives."""
    model = tiny_model(0.5)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=16)
    big = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[5, 6, 7, 8],
                   prefill_chunk_tokens=10_000)
    small = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[5, 6, 7, 8],
                     prefill_chunk_tokens=chunk)
    for a, b in zip(big, small, strict=True):
        assert a.token_ids == b.token_ids and a.stopped == b.stopped
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


@pytest.mark.parametrize("chunk", [4096, 3])
def test_reusing_an_episodes_prefix_states_changes_nothing(chunk):
    """A second call whose prompts extend (or diverge from) the first call's sequences
    reuses their cached K/V and gives what a from-scratch call gives, whether the new
    tokens are prefilled in one forward pass or in chunks of similar length."""
    from distillery.lm.generate import PrefixState

    model = tiny_model(0.5)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=6)
    first = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[1, 2, 3, 4],
                     return_states=True)
    for p, g in zip(PROMPTS, first, strict=True):
        assert isinstance(g.state, PrefixState) and g.state.ids == list(p) + g.token_ids[:-1]
        assert g.state.keys[0].shape[1] == len(g.state.ids)
    nxt = [list(PROMPTS[0]) + first[0].token_ids + [20, 21, 22],      # extends the whole sequence
           list(PROMPTS[1]) + [33, 34],                                # diverges after the prompt
           [44, 45, 46, 47, 48 % VOCAB, 9],                            # shares nothing
           list(PROMPTS[3])[:2]]                                       # a prefix of the old prompt
    prefixes = [first[0].state, first[1].state, first[2].state, first[3].state]
    reused = generate(model, nxt, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[7, 8, 9, 10],
                      prefixes=prefixes, prefill_chunk_tokens=chunk)
    scratch = generate(model, nxt, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[7, 8, 9, 10])
    for a, b in zip(reused, scratch, strict=True):
        assert a.token_ids == b.token_ids and a.stopped == b.stopped
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


def test_rows_that_leave_the_batch_leave_the_others_logprobs_those_of_a_forward_pass(monkeypatch):
    """Finished rows are dropped from the cache (only its filled positions are copied):
    the rows that go on decode from the right keys and values."""
    from distillery.lm.generate import DROP_FINISHED_SHARE, _preallocated_layer_class

    layer_class = _preallocated_layer_class()
    dropped = []
    select = layer_class.batch_select_indices
    monkeypatch.setattr(layer_class, "batch_select_indices",
                        lambda self, indices: (dropped.append(len(indices)), select(self, indices))[1])
    model = tiny_model(0.5)
    prompts = (PROMPTS * DROP_FINISHED_SHARE)[:DROP_FINISHED_SHARE]
    prompts = [p + [10 + i] for i, p in enumerate(prompts)]   # every row its own continuation
    first = generate(model, prompts[:1], stop_ids=[STOP], pad_id=PAD,
                     sampling=SamplingConfig(max_new_tokens=1))[0].token_ids[0]
    gens = generate(model, prompts, stop_ids=[first], pad_id=PAD, sampling=SamplingConfig(max_new_tokens=10))
    assert gens[0].token_ids == [first] and dropped, "row 0 stops at once and leaves the batch"
    assert max(len(g.token_ids) for g in gens) > 3
    for prompt, g in zip(prompts, gens, strict=True):
        seq = torch.tensor([prompt + g.token_ids])
        with torch.no_grad():
            logp = model(seq).logits[0].float().log_softmax(-1)
        pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(g.token_ids))
        torch.testing.assert_close(torch.tensor(g.logprobs), logp[pos, torch.tensor(g.token_ids)], atol=1e-4, rtol=0)


def _generate_resuming(model, prompts, sampling, seeds, defer_share):
    """Call `generate` again for every deferred row, as a caller continuously batching across
    calls does, until no row is left; returns the finished generations and the call count."""
    held, done, todo, calls = [None] * len(prompts), [None] * len(prompts), list(range(len(prompts))), 0
    while todo:
        calls += 1
        gens = generate(model, [prompts[i] + (held[i].token_ids if held[i] else []) for i in todo],
                        stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=[seeds[i] for i in todo],
                        prefixes=[held[i].state if held[i] else None for i in todo],
                        resume=[held[i] for i in todo], defer_share=defer_share)
        assert sum(g.deferred for g in gens) <= len(todo) // defer_share
        for i, g in zip(todo, gens, strict=True):
            if g.deferred:
                assert not g.stopped and g.state is not None and len(g.token_ids) < sampling.max_new_tokens
            held[i], done[i] = (g, None) if g.deferred else (None, g)
        todo = [i for i in todo if held[i] is not None]
    return done, calls


@pytest.mark.parametrize("init_std, sampling", [
    (0.5, SamplingConfig(temperature=0.0, max_new_tokens=16)),      # peaked: greedy has no near-ties
    (0.02, SamplingConfig(temperature=1.0, max_new_tokens=12)),     # flat: sampling visits many tokens
])
def test_a_deferred_row_resumed_later_generates_what_one_call_does(init_std, sampling):
    """A row handed back unfinished and passed back as `resume` goes on where it stopped: its
    tokens, stop, budget and sampling noise are those of one uninterrupted call. With
    defer_share 1 every call returns after one token, the harshest case."""
    model = tiny_model(init_std)
    seeds = [3, 4, 5, 6]
    one_call = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=seeds)
    for share in (1, 2):
        resumed, calls = _generate_resuming(model, PROMPTS, sampling, seeds, share)
        for a, b in zip(resumed, one_call, strict=True):
            assert (a.token_ids, a.stopped) == (b.token_ids, b.stopped)
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)
        if share == 1:
            assert calls == max(len(g.token_ids) for g in one_call)
    assert len({tuple(g.token_ids) for g in one_call}) > 1


def test_deferral_needs_as_many_rows_as_its_share_and_a_resume_must_fit():
    model = tiny_model(0.5)
    sampling = SamplingConfig(max_new_tokens=6)
    gens = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, defer_share=5)
    assert not any(g.deferred for g in gens)          # 4 rows: never 1/5 of them left
    first = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, defer_share=1)
    assert all(g.deferred and len(g.token_ids) == 1 for g in first)
    with pytest.raises(ValueError, match="resume"):   # its tokens must end the prompt
        generate(model, [PROMPTS[0]], stop_ids=[STOP], pad_id=PAD, sampling=sampling, resume=[first[0]])
    with pytest.raises(ValueError, match="resume"):   # only a deferred generation goes on
        generate(model, [PROMPTS[0] + gens[0].token_ids], stop_ids=[STOP], pad_id=PAD, sampling=sampling,
                 resume=[gens[0]])

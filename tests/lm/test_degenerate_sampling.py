"""Sampling with a tiny but valid temperature or top_p is near-greedy, not garbage.

A temperature so small that logits / temperature overflows float32 (1e-39, 1e-45) or rounds
to 0 in it (1e-300), and a top_p that rounds to 0 in float32, used to pick token 0 (or the
first of many +inf logits) at every step. They must give what greedy decoding gives; the
settings that never overflowed sample exactly as before (tests/lm/test_batched_generate.py
holds their log-probs and per-row seeds)."""

from __future__ import annotations

import math

import pytest
import torch
from tests.lm.test_batched_generate import PAD, PROMPTS, STOP, tiny_model

from distillery.lm.generate import SamplingConfig, _choose, generate


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model(0.5)   # peaked: no near-tie between the top two logits


@pytest.fixture(scope="module")
def greedy(model):
    return generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=SamplingConfig(0.0, 1.0, 16))


@pytest.mark.parametrize(("temperature", "top_p"), [
    (1e-39, 1.0), (1e-45, 1.0), (1e-300, 1.0),     # logits / temperature overflows, or temperature is 0 in float32
    (1.0, 1e-300), (0.7, 1e-46),                   # top_p is 0 in float32
    (1e-300, 1e-300),
])
def test_degenerate_temperature_or_top_p_decodes_greedily(model, greedy, temperature, top_p):
    sampling = SamplingConfig(temperature, top_p, 16)
    for seeds in ([0, 1, 2, 3], [7, 7, 7, 7]):
        out = generate(model, PROMPTS, stop_ids=[STOP], pad_id=PAD, sampling=sampling, seeds=seeds)
        for g, want in zip(out, greedy, strict=True):
            assert g.token_ids == want.token_ids
            assert g.logprobs == want.logprobs and g.stopped == want.stopped


def test_the_nucleus_keeps_the_top_token_and_ties_stay_among_the_top():
    logits = torch.tensor([[0.0, 3.0, 3.0, -1.0, float("-inf")]] * 64)
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    picked = _choose(logits, SamplingConfig(1e-45, 1.0, 1), gens)
    assert set(picked.tolist()) == {1, 2}        # both maxima, never the others
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    nucleus = set(_choose(logits, SamplingConfig(1.0, 1e-300, 1), gens).tolist())
    assert len(nucleus) == 1 and nucleus <= {1, 2}   # one token: the first of the two maxima


@pytest.mark.parametrize("temperature", [math.nan, math.inf, -1e-9])
def test_a_temperature_that_is_not_a_finite_number_at_least_0_is_refused(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        SamplingConfig(temperature=temperature)

"""`distillery serve` at the edges of its settings, over real HTTP on 127.0.0.1.

- A tiny but valid temperature (1e-45) or top_p (1e-300) decodes near-greedily: the reply
  is the greedy one, not a run of special tokens (lm.generate's float32 overflow).
- A batch window with no end (batch_wait_ms=inf) is clipped, so requests are answered.
- A conversation whose task alone is over the model card's prompt budget is a 400 with
  OpenAI's `context_length_exceeded` code, worded for the client.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.test_serve import CARD, NAME, build_model, build_tokenizer, corpus

from distillery.serve import (
    MAX_BATCH_WAIT_S,
    Batcher,
    Engine,
    RunningServer,
    create_app,
    serve_in_thread,
)

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Task: file the invoice under finance and tell Ann.\n\ndownloads/"}]


@pytest.fixture(scope="module")
def engine() -> Engine:
    tok = build_tokenizer(corpus())
    return Engine(build_model(tok), tok, CARD, name=NAME, device="cpu")


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[RunningServer]:
    with serve_in_thread(engine) as srv:
        yield srv


def post(base_url: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{base_url}/chat/completions", json={"model": NAME, "messages": MESSAGES, **body},
                      timeout=120)


def reply(base_url: str, **body: Any) -> str:
    r = post(base_url, max_tokens=24, **body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(("temperature", "top_p"), [(1e-45, 1.0), (1e-300, 1.0), (1.0, 1e-300), (0.7, 1e-46)])
def test_a_tiny_temperature_or_top_p_replies_greedily(server, temperature, top_p):
    greedy = reply(server.base_url, temperature=0)
    assert "<pad>" not in greedy
    for seed in (1, 2):
        assert reply(server.base_url, temperature=temperature, top_p=top_p, seed=seed) == greedy


def test_a_batch_window_without_end_is_clipped_and_requests_are_answered(engine):
    assert Batcher(engine, wait_s=math.inf).wait_s == MAX_BATCH_WAIT_S
    assert Batcher(engine, wait_s=0.002).wait_s == 0.002          # a usual window is left as it is
    for bad in (math.nan, -1.0):
        with pytest.raises(ValueError, match="batch"):
            create_app(engine, batch_wait_ms=bad)
    with serve_in_thread(engine, batch_wait_ms=math.inf) as srv:
        health = httpx.get(srv.base_url.removesuffix("/v1") + "/health", timeout=30)
        assert health.status_code == 200
        assert reply(srv.base_url, temperature=0)


def test_a_task_over_the_prompt_budget_is_a_context_length_error_worded_for_the_client(server):
    budget = CARD["prompt"]["max_prompt_tokens"]
    long_task = "Task: " + " ".join(f"file invoice {i} under finance and tell Ann." for i in range(80)) + "\n\nx"
    r = post(server.base_url, messages=[{"role": "user", "content": long_task}], max_tokens=8)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", "messages", "context_length_exceeded")
    assert f"too long for this model's prompt budget of {budget} tokens" in err["message"]
    assert "model card's prompt.max_prompt_tokens" in err["message"] and "send a shorter conversation" in err["message"]
    assert "raise prompt.max_prompt_tokens" not in err["message"]
    assert reply(server.base_url, temperature=0)   # the server goes on answering

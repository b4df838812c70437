"""OpenAIPolicy against real HTTP servers on 127.0.0.1 (stdlib, scripted replies).

Nothing is mocked: the `openai` client makes real requests, retries them with its own
backoff, and the scripted endpoint records what arrived and how many were in flight.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.json_server import JsonServer, closed_port_url

from distillery.agents.base import PolicySpec, make_policy
from distillery.agents.openai import (
    OpenAIPolicy,
    extract_action,
    request_seed,
    tool_call_text,
    tools_messages,
)
from distillery.agents.prompts import render_messages
from distillery.envs.actions import format_call, parse_action
from distillery.envs.base import ToolParam, ToolSpec, tool_specs
from distillery.rollout import EpisodeJob, RolloutConfig, run_batch
from distillery.types import Context, Task, ToolCall, Turn

# ---------------------------------------------------------------------------------------
# A scripted OpenAI-compatible endpoint
# ---------------------------------------------------------------------------------------

Reply = tuple[int, dict[str, Any], dict[str, str]]   # status, JSON body, extra headers


def completion(content: str | None = None, tool_calls: list[dict] | None = None,
               usage: tuple[int, int] | None = (10, 3), finish: str = "stop") -> Reply:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        msg["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}]}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                         "total_tokens": sum(usage)}
    return 200, body, {}


def fn_call(name: str, arguments: str, i: int = 0) -> dict[str, Any]:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}


@dataclass
class Endpoint:
    script: Callable[[int, dict[str, Any]], Reply]   # (request number, body) -> reply
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""


@pytest.fixture
def endpoint() -> Iterator[Callable[..., Endpoint]]:
    servers: list[JsonServer] = []

    def start(script: Callable[[int, dict[str, Any]], Reply], delay_s: float = 0.0) -> Endpoint:
        ep = Endpoint(script, delay_s)

        def answer(headers: dict[str, str], body: dict[str, Any]) -> Reply:
            with ep.lock:
                n = len(ep.requests)
                ep.requests.append(body)
                ep.in_flight += 1
                ep.max_in_flight = max(ep.max_in_flight, ep.in_flight)
            time.sleep(ep.delay_s)
            try:
                return ep.script(n, body)
            finally:
                with ep.lock:
                    ep.in_flight -= 1

        servers.append(JsonServer(answer))
        ep.base_url = servers[-1].base_url
        return ep

    yield start
    for srv in servers:
        srv.close()


# ---------------------------------------------------------------------------------------
# Contexts and calls built from the real environment's tools
# ---------------------------------------------------------------------------------------

SPECS = tool_specs("stage")


def _call_of(spec: ToolSpec) -> ToolCall:
    return ToolCall(spec.name, {p.name: (3 if p.type == "integer" else f"{p.name} value")
                                for p in spec.params if p.required})


MULTI = max(SPECS, key=lambda s: sum(p.required for p in s.params))   # most required args
MULTI_CALL = _call_of(MULTI)


def make_task(i: int = 0) -> Task:
    return Task(task_id=f"t{i}", family="fam", split="test", profile="default", hint="",
                instruction=f"Do job number {i}.", initial_state={}, reference_solution=[],
                checks=[])


def make_ctx(i: int = 0, history: list[Turn] | None = None) -> Context:
    return Context(episode_id=f"ep{i}", task=make_task(i), t=len(history or []),
                   observation=f"observation {i}", history=history or [], seed=7)


def policy(ep: Endpoint | str, **kw: Any) -> OpenAIPolicy:
    base_url = ep if isinstance(ep, str) else ep.base_url
    return OpenAIPolicy(base_url=base_url, model="m", **{"max_retries": 2, "timeout": 10, **kw})


# ---------------------------------------------------------------------------------------
# Retries, errors, usage, concurrency
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 429])
def test_transient_failures_are_retried_by_the_client(endpoint, status):
    # Retry-After-ms keeps the test fast; without it the client backs off 0.5 s, 1 s, ...
    ep = endpoint(lambda n, _: (status, {"error": {"message": "busy"}}, {"retry-after-ms": "20"})
                  if n < 2 else completion(format_call(MULTI_CALL)))
    with policy(ep) as pol:
        [out] = pol.act([make_ctx()])
    assert out.error == ""
    assert out.text == format_call(MULTI_CALL)
    assert len(ep.requests) == 3


def test_client_errors_are_not_retried_and_name_the_endpoint(endpoint):
    ep = endpoint(lambda n, _: (400, {"error": {"message": "bad field 'x'"}}, {}))
    with policy(ep) as pol:
        [out] = pol.act([make_ctx()])
    assert len(ep.requests) == 1
    assert out.text == "" and "HTTP 400" in out.error and ep.base_url in out.error
    assert "bad field 'x'" in out.error


def test_endpoint_down_is_an_errored_episode_not_a_crash():
    url = closed_port_url()
    with policy(url, max_retries=1) as pol:
        [out] = pol.act([make_ctx()])
        assert out.text == "" and url in out.error and "cannot connect" in out.error
        task = make_task()
        job = EpisodeJob(task=task, sample=0, seed=1, episode_id="ep-down", group="g")
        traj = run_batch(pol, [job], RolloutConfig())
    row = traj.episodes.row(0, named=True)
    assert row["failure_mode"] == "error"
    assert url in row["error"] and row["policy"] == "openai" and row["model"] == "m"
    assert traj.steps.height == 0


def test_a_malformed_reply_is_an_errored_episode_not_a_crash(endpoint):
    status, body, headers = completion("finish()")
    body["choices"][0]["message"]["content"] = [{"type": "text", "text": "finish()"}]
    ep = endpoint(lambda n, _: (status, body, headers))
    with policy(ep) as pol:
        [out] = pol.act([make_ctx()])
        assert out.text == "" and (out.tokens_in, out.tokens_out) == (10, 3)
        assert out.error.startswith("a malformed reply from") and "message.content is a list" in out.error
        job = EpisodeJob(task=make_task(), sample=0, seed=1, episode_id="ep-bad", group="g")
        traj = run_batch(pol, [job], RolloutConfig())
    row = traj.episodes.row(0, named=True)
    assert row["failure_mode"] == "error" and "message.content is a list" in row["error"]


def test_usage_and_cost_from_the_price_table(endpoint):
    ep = endpoint(lambda n, _: completion(format_call(MULTI_CALL), usage=(1000, 200)))
    prices = {"m": {"input_per_mtok": 2.0, "output_per_mtok": 8.0},
              "other": {"input_per_mtok": 100.0, "output_per_mtok": 100.0}}
    with policy(ep, prices=prices) as pol:
        [out] = pol.act([make_ctx()])
    assert (out.tokens_in, out.tokens_out) == (1000, 200)
    assert out.cost_usd == pytest.approx((1000 * 2.0 + 200 * 8.0) / 1e6)
    with policy(ep, prices={"other": prices["other"]}) as pol:   # model not priced: free
        assert pol.act([make_ctx()])[0].cost_usd == 0.0
    ep_no_usage = endpoint(lambda n, _: completion("finish()", usage=None))
    with policy(ep_no_usage, prices=prices) as pol:
        out = pol.act([make_ctx()])[0]
    assert (out.tokens_in, out.tokens_out, out.cost_usd) == (0, 0, 0.0)


def test_concurrency_limit_and_order(endpoint):
    # Each reply names the episode it answers, so the order of outputs can be checked.
    def script(n: int, body: dict[str, Any]) -> Reply:
        first_user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        return completion(f"reply to {first_user.splitlines()[0]}")

    ep = endpoint(script, delay_s=0.15)
    ctxs = [make_ctx(i) for i in range(10)]
    with policy(ep, concurrency=3) as pol:
        t0 = time.perf_counter()
        outs = pol.act(ctxs)
        wall = time.perf_counter() - t0
    assert ep.max_in_flight == 3
    assert [o.text for o in outs] == [f"reply to Task: Do job number {i}." for i in range(10)]
    assert wall < 10 * 0.15   # they did overlap


def test_request_carries_messages_sampling_and_a_reproducible_seed(endpoint):
    ep = endpoint(lambda n, _: completion("finish()"))
    ctx = make_ctx(1, history=[Turn("observation 0", format_call(MULTI_CALL))])
    ctx.experience = ["Archive invoices under finance/."]
    with policy(ep, temperature=0.7, top_p=0.9, max_tokens=33) as pol:
        pol.act([ctx])
    [req] = ep.requests
    assert req["messages"] == render_messages(ctx, SPECS)
    assert (req["model"], req["temperature"], req["top_p"], req["max_tokens"]) == ("m", 0.7, 0.9, 33)
    assert "tools" not in req
    from distillery.agents.hf import _row_seed

    assert req["seed"] == request_seed(ctx) == _row_seed(ctx)


# ---------------------------------------------------------------------------------------
# Function calling (tools mode)
# ---------------------------------------------------------------------------------------


def test_tools_mode_turns_a_tool_call_into_canonical_text(endpoint):
    args = dict(reversed(list(MULTI_CALL.args.items())))   # the model's own argument order
    ep = endpoint(lambda n, _: completion(None, [fn_call(MULTI.name, json.dumps(args)),
                                                 fn_call("finish", "{}", 1)], finish="tool_calls"))
    ctx = make_ctx(0, history=[Turn("observation 0", format_call(MULTI_CALL)),
                               Turn("observation 1", "not a call")])
    with policy(ep, mode="tools") as pol:
        [out] = pol.act([ctx])
        assert pol.notes["several tool calls, took the first"] == 1
    assert out.text == format_call(MULTI_CALL)          # spec order, as parse_action orders it
    assert parse_action(out.text, SPECS).call == MULTI_CALL
    [req] = ep.requests
    assert req["tools"] == [s.json_schema() for s in SPECS]
    roles = [m["role"] for m in req["messages"]]
    # A valid past action went out as a call answered by a tool message; an invalid one as text.
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    call_msg, tool_msg = req["messages"][2], req["messages"][3]
    assert call_msg["tool_calls"][0]["function"]["name"] == MULTI.name
    assert json.loads(call_msg["tool_calls"][0]["function"]["arguments"]) == MULTI_CALL.args
    assert tool_msg == {"role": "tool", "tool_call_id": call_msg["tool_calls"][0]["id"],
                        "content": "observation 1"}
    assert req["messages"][4] == {"role": "assistant", "content": "not a call"}


def test_tools_mode_text_reply_and_text_mode_tool_call_are_both_understood(endpoint):
    call_text = format_call(MULTI_CALL)
    ep_text = endpoint(lambda n, _: completion(f"I will do this:\n{call_text}"))
    with policy(ep_text, mode="tools") as pol:
        assert pol.act([make_ctx()])[0].text == call_text
    ep_call = endpoint(lambda n, _: completion("", [fn_call(MULTI.name, json.dumps(MULTI_CALL.args))]))
    with policy(ep_call, mode="text") as pol:
        assert pol.act([make_ctx()])[0].text == call_text
        assert pol.notes["tool call in text mode"] == 1


def test_empty_reply_is_an_empty_action_not_an_error(endpoint):
    ep = endpoint(lambda n, _: completion(None, finish="length"))
    with policy(ep) as pol:
        [out] = pol.act([make_ctx()])
    assert out.text == "" and out.error == ""
    assert not parse_action(out.text, SPECS).valid   # the environment tells the agent


def test_bad_configuration_fails_at_construction():
    with pytest.raises(ValueError, match="mode must be one of"):
        OpenAIPolicy(base_url="http://127.0.0.1:1/v1", model="m", mode="json")
    with pytest.raises(ValueError, match="base_url"):
        OpenAIPolicy(base_url="127.0.0.1:8000", model="m")
    with pytest.raises(ValueError, match=r"prices\['m'\]"):
        OpenAIPolicy(base_url="http://127.0.0.1:1/v1", model="m", prices={"m": {"input": 1}})
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIPolicy(base_url="http://127.0.0.1:1/v1", model="m", concurrency=0)


def test_make_policy_builds_it_from_plain_params():
    spec = PolicySpec("openai", {"base_url": "http://127.0.0.1:1/v1", "model": "qwen",
                                 "label": "qwen-text", "prices": {"qwen": {
                                     "input_per_mtok": 0.1, "output_per_mtok": 0.2}}})
    pol = make_policy(spec)
    assert (pol.name, pol.model) == ("qwen-text", "qwen")
    pol.close()


# ---------------------------------------------------------------------------------------
# Reply parsing (pure functions)
# ---------------------------------------------------------------------------------------

UNIT = [ToolSpec("send_mail", "send", (ToolParam("to"), ToolParam("subject"), ToolParam("body"))),
        ToolSpec("create_event", "book", (ToolParam("title"), ToolParam("duration", type="integer"))),
        ToolSpec("finish", "end")]


@pytest.mark.parametrize("reply, action", [
    ('send_mail(to="a", subject="s", body="b")', 'send_mail(to="a", subject="s", body="b")'),
    ('Sure! I will send it now.\nsend_mail(to="a", subject="s", body="b")\nDone.',
     'send_mail(to="a", subject="s", body="b")'),
    ('I will call `create_event(title="x (draft)", duration=30)` next.',
     'create_event(title="x (draft)", duration=30)'),
    ('```python\nfinish()\n```', "finish()"),
    ('<think>maybe send_mail(to="x")? no.</think>\nfinish()', "finish()"),
    ('The call is {"tool": "finish", "args": {}} okay', '{"tool": "finish", "args": {}}'),
    ("I cannot help with that.", "I cannot help with that."),
    ("   ", ""),
    # a reply that begins as a call is judged as written, as the same text from a local model is
    ('finish()obj="coin")', 'finish()obj="coin")'),
    ('send_mail(to="a", subject="s" send_mail(to="a", subject="s", body="b")',
     'send_mail(to="a", subject="s" send_mail(to="a", subject="s", body="b")'),
])
def test_extract_action(reply, action):
    assert extract_action(reply, UNIT)[0] == action


def test_tool_call_text_orders_arguments_and_reports_bad_json():
    assert tool_call_text("create_event", '{"duration": 45.0, "title": "x"}', UNIT) == \
        'create_event(title="x", duration=45)'
    bad = tool_call_text("finish", "{not json", UNIT)
    parsed = parse_action(bad, UNIT)
    assert not parsed.valid and "malformed JSON arguments" in parsed.error


# Python converts at most 4,300 digits to an int: json.loads of a longer number raises
# ValueError, not JSONDecodeError. A reply holding one is an invalid action, never an error.
TOO_LONG = "9" * 5000


def test_a_number_too_long_to_convert_is_an_invalid_action_not_an_error():
    bad = tool_call_text("create_event", '{"title": "x", "duration": ' + TOO_LONG + "}", UNIT)
    parsed = parse_action(bad, UNIT)
    assert not parsed.valid and "malformed JSON arguments" in parsed.error
    reply = 'The call is {"tool": "finish", "args": {"n": ' + TOO_LONG + "}} okay"
    assert extract_action(reply, UNIT) == (reply, "")
    later = reply + ' or {"tool": "finish", "args": {}}'
    assert extract_action(later, UNIT) == ('{"tool": "finish", "args": {}}', "took a JSON call out of surrounding text")


def test_tools_messages_round_trip_through_the_history():
    ctx = make_ctx(0, history=[Turn("o0", 'send_mail(to="a", subject="s", body="b")')])
    msgs = tools_messages(render_messages(ctx, UNIT), UNIT)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool"]
    fn = msgs[2]["tool_calls"][0]["function"]
    assert tool_call_text(fn["name"], fn["arguments"], UNIT) == ctx.history[0].action

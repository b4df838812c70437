"""The OpenAI-compatible endpoint client against real HTTP servers on 127.0.0.1: replies,
the key it sends, the client's retries, errors that name the URL and the model, pickling."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.json_server import JsonServer, closed_port_url

from distillery.llm import (
    PLACEHOLDER_KEY,
    ChatEndpoint,
    ChatReply,
    EndpointError,
    reply_choice,
    reply_usage,
)

Script = Callable[[int, dict[str, Any]], tuple[int, dict[str, Any]]]   # (request number, body) -> reply


class Server(JsonServer):
    """Answers with `script`, after `delay_s`, and records each request's headers and body."""

    def __init__(self, script: Script, delay_s: float = 0.0) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

        def answer(headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
            n = len(self.requests)
            self.requests.append((headers, body))
            time.sleep(delay_s)
            status, reply = script(n, body)
            return status, reply, {"retry-after-ms": "10"}   # the client's backoff, kept short

        super().__init__(answer)


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(script: Script, delay_s: float = 0.0) -> Server:
        started.append(Server(script, delay_s))
        return started[-1]

    yield start
    for s in started:
        s.close()


def reply(content: str | None) -> tuple[int, dict[str, Any]]:
    return 200, {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}]}


HELLO = [{"role": "user", "content": "hello"}]


def test_complete_sends_the_model_and_sampling_and_returns_the_text(server, monkeypatch):
    monkeypatch.delenv("TEST_LLM_KEY", raising=False)
    srv = server(lambda n, body: reply("hi there"))
    endpoint = ChatEndpoint(srv.base_url + "/", "m", api_key_env="TEST_LLM_KEY", temperature=0.3, max_tokens=7)
    assert endpoint.base_url == srv.base_url
    assert endpoint.complete(HELLO) == "hi there"
    [(headers, body)] = srv.requests
    assert (body["model"], body["messages"], body["temperature"], body["max_tokens"]) == ("m", HELLO, 0.3, 7)
    assert headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"          # a local server takes any key
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
    keyed = ChatEndpoint(srv.base_url, "m", api_key_env="TEST_LLM_KEY")
    assert keyed.create(messages=HELLO, model="other").choices[0].message.content == "hi there"
    assert srv.requests[-1][0]["authorization"] == "Bearer sk-test" and srv.requests[-1][1]["model"] == "other"


def test_transient_errors_are_retried_then_named_with_the_url_and_model(server):
    srv = server(lambda n, body: (503, {"error": {"message": "overloaded"}}) if n < 2 else reply("ok"))
    assert ChatEndpoint(srv.base_url, "m", max_retries=2).complete(HELLO) == "ok"
    assert len(srv.requests) == 3
    down = server(lambda n, body: (500, {"error": {"message": "boom"}}))
    with pytest.raises(EndpointError) as err:
        ChatEndpoint(down.base_url, "m", max_retries=1).complete(HELLO)
    assert len(down.requests) == 2
    assert "HTTP 500 after 1 retries" in str(err.value) and down.base_url in str(err.value) and "'m'" in str(err.value)
    assert "boom" in str(err.value)


def test_client_errors_are_not_retried_and_a_missing_key_is_said(server, monkeypatch):
    monkeypatch.delenv("TEST_LLM_KEY", raising=False)
    srv = server(lambda n, body: (401, {"error": {"message": "invalid key"}}))
    with pytest.raises(EndpointError, match=r"HTTP 401 from .*invalid key \(no key sent: \$TEST_LLM_KEY is unset\)"):
        ChatEndpoint(srv.base_url, "m", api_key_env="TEST_LLM_KEY", max_retries=3).complete(HELLO)
    assert len(srv.requests) == 1


def test_down_slow_and_empty_endpoints_raise_endpoint_errors(server):
    url = closed_port_url()
    with pytest.raises(EndpointError, match="cannot connect, after 0 retries") as err:
        ChatEndpoint(url, "m", max_retries=0).complete(HELLO)
    assert url in str(err.value)
    slow = server(lambda n, body: reply("late"), delay_s=1.0)
    with pytest.raises(EndpointError, match=r"timed out after 0.2s per attempt"):
        ChatEndpoint(slow.base_url, "m", timeout=0.2, max_retries=0).complete(HELLO)
    empty = server(lambda n, body: (200, {**reply("x")[1], "choices": []}))
    with pytest.raises(EndpointError, match="no choices in the reply from"):
        ChatEndpoint(empty.base_url, "m").complete(HELLO)


def _choice(**fields: Any) -> dict[str, Any]:
    return {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop", **fields}


def _message(**fields: Any) -> dict[str, Any]:
    return _choice(message={"role": "assistant", "content": None, **fields})


def _call(**function: Any) -> dict[str, Any]:
    return {"id": "c0", "type": "function", "function": {"name": "finish", "arguments": "{}", **function}}


# The client builds its reply objects without validating them: each of these once surfaced as an
# AttributeError or TypeError in whatever read the reply, far from the request.
MALFORMED = {
    "choices a string": ({"choices": "x"}, "choices is a string, not a list"),
    "a choice a number": ({"choices": [5]}, "choices[0] is a number, not an object"),
    "no message": ({"choices": [{"index": 0}]}, "choices[0].message is null, not an object"),
    "content a list": ({"choices": [_message(content=[{"type": "text", "text": "x"}])]},
                       "choices[0].message.content is a list, not text or null"),
    "content a number": ({"choices": [_message(content=5)]}, "choices[0].message.content is a number"),
    "tool_calls a string": ({"choices": [_message(tool_calls="x")]}, "choices[0].message.tool_calls is a string"),
    "a tool call a number": ({"choices": [_message(tool_calls=[5])]}, "tool_calls[0] is a number, not an object"),
    "no function name": ({"choices": [_message(tool_calls=[_call(name=None)])]},
                         "tool_calls[0].function.name is null, not a name"),
    "arguments an object": ({"choices": [_message(tool_calls=[_call(arguments={"a": 1})])]},
                            "tool_calls[0].function.arguments is an object, not JSON text"),
    "function a string": ({"choices": [_message(tool_calls=[{"id": "c0", "type": "function", "function": "finish"}])]},
                          "tool_calls[0].function is a string, not an object"),
    "a logprob entry a number": ({"choices": [_choice(logprobs={"content": [-0.5]})]},
                                 "choices[0].logprobs.content[0] is a number, not an object"),
    "a logprob null": ({"choices": [_choice(logprobs={"content": [{"token": "x", "logprob": None}]})]},
                       "choices[0].logprobs.content[0].logprob is null, not a number"),
    "usage a list": ({"usage": [1, 2]}, "usage is a list, not an object"),
    "a token count a string": ({"usage": {"prompt_tokens": "ten", "completion_tokens": 1}},
                               "usage.prompt_tokens is a string, not a count"),
    "a negative token count": ({"usage": {"prompt_tokens": 3, "completion_tokens": -1}},
                               "usage.completion_tokens is a number, not a count"),
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_a_malformed_reply_is_an_endpoint_error_naming_the_field(server, what):
    fields, says = MALFORMED[what]
    srv = server(lambda n, body: (200, {**reply("x")[1], **fields}))
    endpoint = ChatEndpoint(srv.base_url, "m", max_retries=0)
    resp = endpoint.create(messages=HELLO)
    with pytest.raises(EndpointError) as err:
        reply_usage(resp, endpoint.where)
        reply_choice(resp, endpoint.where)
    assert says in str(err.value) and str(err.value).startswith(f"a malformed reply from {endpoint.where}: ")
    if not what.startswith(("usage", "a token", "a negative")):
        with pytest.raises(EndpointError, match="a malformed reply from"):
            endpoint.complete(HELLO)


NOT_JSON = {     # a body sent with status 200, its content type, what the error says
    "an empty body": (b"", "application/json", "not JSON: Expecting value"),
    "a body cut short": (b'{"id": "c", "choices": [{"message": {"content": "he', "application/json",
                         "not JSON: Unterminated string"),
    "a number too long to convert": (b'{"usage": {"prompt_tokens": ' + b"9" * 5000 + b"}}", "application/json",
                                     "not JSON: Exceeds the limit (4300 digits)"),
    "not UTF-8": (b'{"id": "\xff"}', "application/json", "not JSON: 'utf-8' codec can't decode"),
    "a proxy's error page": (b"<html><body>Bad gateway</body></html>", "text/html",
                             "not JSON: '<html><body>Bad gateway"),
}


@pytest.mark.parametrize("what", list(NOT_JSON))
def test_a_reply_that_is_not_json_is_an_endpoint_error_naming_the_endpoint(what):
    body, content_type, says = NOT_JSON[what]
    with JsonServer(lambda headers, request: (200, body, {"Content-Type": content_type})) as srv:
        endpoint = ChatEndpoint(srv.base_url, "m", max_retries=0)
        with pytest.raises(EndpointError) as err:
            endpoint.complete(HELLO)
    assert str(err.value).startswith(f"a reply from {endpoint.where} that is not JSON") and says in str(err.value)


def test_a_well_formed_reply_reads_as_sent(server):
    body = {**reply(None)[1], "usage": {"prompt_tokens": 7, "completion_tokens": 2.0},
            "choices": [_message(tool_calls=[_call(arguments='{"a": 1}'), {"id": "c1", "type": "custom"},
                                             _call(name="other", arguments=None)]) | {
                "logprobs": {"content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": 0}]}}]}
    srv = server(lambda n, b: (200, body))
    endpoint = ChatEndpoint(srv.base_url, "m", max_retries=0)
    resp = endpoint.create(messages=HELLO)
    assert reply_usage(resp, endpoint.where) == (7, 2)
    assert reply_choice(resp, endpoint.where) == ChatReply(
        text="", calls=(("finish", '{"a": 1}'), ("other", "")), finish_reason="stop", token_logprobs=(-0.5, 0.0))
    bare = server(lambda n, b: reply("hi"))
    bare_resp = ChatEndpoint(bare.base_url, "m").create(messages=HELLO)
    assert reply_usage(bare_resp, "x") == (0, 0)
    assert reply_choice(bare_resp, "x") == ChatReply("hi", (), "stop", None)


def test_an_endpoint_pickles_without_its_client_and_works_after(server):
    srv = server(lambda n, body: reply("again"))
    endpoint = ChatEndpoint(srv.base_url, "m", timeout=5.0, max_retries=1, max_tokens=9)
    assert endpoint.complete(HELLO) == "again"
    copy = pickle.loads(pickle.dumps(endpoint))
    assert copy._client is None and (copy.base_url, copy.model, copy.timeout, copy.max_tokens) == (
        srv.base_url, "m", 5.0, 9)
    assert copy.complete(HELLO) == "again" and len(srv.requests) == 2
    endpoint.close()
    assert endpoint.complete(HELLO) == "again"                             # a new client after close


def test_bad_settings_fail_at_construction_and_a_remote_host_without_a_key_warns(monkeypatch, caplog):
    with pytest.raises(ValueError, match="base_url"):
        ChatEndpoint("127.0.0.1:8000", "m")
    with pytest.raises(ValueError, match="model"):
        ChatEndpoint("http://127.0.0.1:8000/v1", "")
    with pytest.raises(ValueError, match="timeout"):
        ChatEndpoint("http://127.0.0.1:8000/v1", "m", timeout=0)
    monkeypatch.delenv("TEST_LLM_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="distillery.llm"):
        ChatEndpoint("http://127.0.0.1:8000/v1", "m", api_key_env="TEST_LLM_KEY")
        assert not caplog.records
        ChatEndpoint("https://api.example.com/v1", "m", api_key_env="TEST_LLM_KEY")
    assert "$TEST_LLM_KEY is unset" in caplog.text

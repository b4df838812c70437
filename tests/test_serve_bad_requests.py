"""`distillery serve` under bad requests: each gets a 4xx in the OpenAI error format, and the
server stays healthy — /health answers, and a good request gets the same completion as
before the bad one. Covers invalid JSON, unknown models, absurd max_tokens, oversized and
unsized bodies, text that is not UTF-8, wrong API keys, and clients that disconnect
mid-stream or before their batch is decoded. Speed under load is bench/serve_load.py's."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.test_serve import CARD, NAME, build_model, build_tokenizer, corpus

from distillery.serve import MAX_REQUEST_BYTES, Engine, RunningServer, serve_in_thread

pytestmark = pytest.mark.slow

KEY = "s3cret"
MESSAGES = [{"role": "user", "content": "Task: file the invoice under finance and tell Ann.\n\ndownloads/"}]
GOOD = {"model": NAME, "messages": MESSAGES, "max_tokens": 12, "temperature": 0}


@pytest.fixture(scope="module")
def engine() -> Engine:
    tok = build_tokenizer(corpus())
    return Engine(build_model(tok), tok, CARD, name=NAME, device="cpu")


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[RunningServer]:
    with serve_in_thread(engine, api_key=KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def expected(http: httpx.Client) -> str:
    """The good request's completion, before any bad request was sent."""
    r = http.post("/chat/completions", json=GOOD)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def assert_healthy(http: httpx.Client, expected: str) -> None:
    health = httpx.get(str(http.base_url).removesuffix("/v1/") + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    r = http.post("/chat/completions", json=GOOD)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == expected


def post_raw(http: httpx.Client, body: bytes, **headers: str) -> httpx.Response:
    return http.post("/chat/completions", content=body,
                     headers={"content-type": "application/json", **headers})


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["message"] and err["type"]
    return err


BAD_BODIES = {
    "invalid JSON": (b'{"model": "tiny", "messages": [', 400),
    "empty body": (b"", 400),
    "an array": (b"[1, 2]", 400),
    "no messages": (json.dumps({"model": NAME, "messages": []}).encode(), 400),
    "unknown role": (json.dumps({"model": NAME, "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400),
    "unknown model": (json.dumps({**GOOD, "model": "gpt-9"}).encode(), 404),
    "max_tokens 0": (json.dumps({**GOOD, "max_tokens": 0}).encode(), 400),
    "max_tokens 10**12": (json.dumps({**GOOD, "max_tokens": 10 ** 12}).encode(), 400),
    "max_tokens 10**40": (json.dumps({**GOOD, "max_tokens": 10 ** 40}).encode(), 400),
    "max_tokens beyond the context": (json.dumps({**GOOD, "max_tokens": 1025}).encode(), 400),
    "max_tokens not a number": (json.dumps({**GOOD, "max_tokens": "lots"}).encode(), 400),
    # more digits than Python converts to an int: json raises ValueError, not JSONDecodeError
    "a number of 5000 digits": (json.dumps(GOOD).replace('"max_tokens": 12', '"max_tokens": ' + "9" * 5000).encode(), 400),
    "temperature NaN": (json.dumps({**GOOD, "temperature": float("nan")}).encode(), 400),
    "a lone surrogate": (json.dumps({**GOOD, "messages": [{"role": "user", "content": "Task: \ud800\n\nx"}]}).encode(), 400),
    "tool parameters a string": (json.dumps({**GOOD, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": "oops"}}]}).encode(), 400),
    "tool properties a list": (json.dumps({**GOOD, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"properties": [1]}}}]}).encode(), 400),
    "tool required a number": (json.dumps({**GOOD, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"required": 5}}}]}).encode(), 400),
    "tool property a string": (json.dumps({**GOOD, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"properties": {"x": "int"}}}}]}).encode(), 400),
    "oversized messages": (json.dumps({**GOOD, "messages": [
        {"role": "user", "content": "Task: x\n\n" + "word " * (MAX_REQUEST_BYTES // 4)}]}).encode(), 413),
}


@pytest.mark.parametrize("what", list(BAD_BODIES))
def test_a_bad_request_is_a_4xx_and_leaves_the_server_healthy(http, expected, what):
    body, status = BAD_BODIES[what]
    err = error_of(post_raw(http, body), status)
    if what.startswith("max_tokens") and status == 400 and "number" not in what and what != "max_tokens 0":
        assert err["param"] == "max_tokens" and "context" in err["message"]
    if what.startswith("tool "):
        assert err["param"].startswith("tools[0].function.parameters"), err
    assert_healthy(http, expected)


def test_a_body_that_is_not_a_json_object_is_named_as_such(http):
    invalid = error_of(post_raw(http, b'{"model": "tiny", "messages": ['), 400)
    assert invalid["param"] is None and "not valid JSON" in invalid["message"]   # not a byte offset
    for body, kind in ((b"[1, 2]", "application/json"), (json.dumps(GOOD).encode(), "application/x-www-form-urlencoded")):
        err = error_of(post_raw(http, body, **{"content-type": kind}), 400)
        assert err["param"] is None and "JSON object" in err["message"] and "Content-Type" in err["message"]


def test_max_tokens_within_the_context_is_clipped_not_refused(http):
    r = http.post("/chat/completions", json={**GOOD, "max_tokens": 1000})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 1000


def test_a_body_of_unstated_length_is_refused(http, expected):
    def chunks() -> Iterator[bytes]:
        yield json.dumps(GOOD).encode()

    r = http.post("/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert error_of(r, 411)["code"] == "length_required"
    assert_healthy(http, expected)


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic czNjcmV0", f"Bearer {KEY}x"])
def test_a_wrong_api_key_is_a_401(server, http, expected, auth):
    headers = {"Authorization": auth} if auth else {}
    r = httpx.post(server.base_url + "/chat/completions", json=GOOD, headers=headers, timeout=30)
    assert error_of(r, 401)["code"] == "invalid_api_key"
    assert_healthy(http, expected)


@pytest.mark.parametrize("auth", [f"bearer {KEY}", f"BEARER {KEY}", f"Bearer  {KEY}"])
def test_the_auth_scheme_is_case_insensitive(server, auth):
    r = httpx.post(server.base_url + "/chat/completions", json=GOOD, headers={"Authorization": auth}, timeout=60)
    assert r.status_code == 200, r.text


def _raw_request(server: RunningServer, body: dict[str, Any]) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").removesuffix("/v1").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=120)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def test_clients_that_disconnect_mid_stream_or_before_their_batch_leave_the_server_healthy(
        server, http, expected):
    for _ in range(3):
        # Mid-stream: read the headers and the first event, then hang up.
        sock = _raw_request(server, {**GOOD, "stream": True, "max_tokens": 40})
        seen = b""
        while b"data:" not in seen:
            chunk = sock.recv(256)
            assert chunk, "the server closed the stream before its first event"
            seen += chunk
        assert seen.startswith(b"HTTP/1.1 200")
        sock.close()
        # Before the batch is decoded: send and hang up at once.
        _raw_request(server, {**GOOD, "max_tokens": 40}).close()
    assert_healthy(http, expected)
    # A full stream still arrives whole after them.
    with http.stream("POST", "/chat/completions", json={**GOOD, "stream": True}) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and events[-1] == "data: [DONE]"
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                   if json.loads(e[6:])["choices"])
    assert text == expected


def test_bad_requests_among_good_ones_do_not_change_the_good_ones(http, expected):
    bodies = [json.dumps(GOOD).encode() if i % 2 else BAD_BODIES[list(BAD_BODIES)[i % len(BAD_BODIES)]][0]
              for i in range(12)]
    out: list[httpx.Response | None] = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def go(i: int) -> None:
        barrier.wait()
        out[i] = post_raw(http, bodies[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in enumerate(out):
        assert r is not None
        if i % 2:
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == expected
        else:
            assert 400 <= r.status_code < 500, (i, r.status_code, r.text[:200])
    assert_healthy(http, expected)

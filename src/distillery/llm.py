"""The one client for OpenAI-compatible chat endpoints (vLLM, SGLang, Ollama, OpenAI,
`distillery serve`).

`ChatEndpoint` holds where an endpoint is and how to reach it: the URL, the model it serves,
the environment variable its key is read from, the timeout per attempt and the number of
retries. Retries are the `openai` client's own (exponential backoff with jitter, honouring
`Retry-After`; on connection errors, timeouts, 408, 409, 429 and 5xx). A request that still
fails raises `EndpointError`, whose message names the URL and the model and says what went
wrong. The endpoint is picklable (the client is built on first use, in each process), so
whatever holds one can travel to rollout workers.

Local servers accept any key; when the variable is unset a placeholder is sent, with a
warning when the host is not local (a hosted API will answer 401).

The client builds its reply objects without validating them, so a field an endpoint got wrong
(a list for the content, a string for a token count, no message at all) would surface later as
an AttributeError far from the request. `reply_usage` and `reply_choice` read a reply and check
each field they use; a malformed one is an `EndpointError` naming the field.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "EMPTY"   # what local servers (vLLM, Ollama, distillery serve) accept
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
MAX_ERROR_CHARS = 600


class EndpointError(RuntimeError):
    """An OpenAI-compatible endpoint could not answer (down, timed out, an HTTP error after
    the client's retries, a reply with no choices or a malformed one)."""


@dataclass(frozen=True)
class ChatReply:
    """The first choice of a chat completion, checked."""
    text: str                               # the message's content ("" for none)
    calls: tuple[tuple[str, str], ...]      # its function calls: (name, arguments as JSON text)
    finish_reason: str
    token_logprobs: tuple[float, ...] | None   # per content token, when the request asked for them


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _is_object(value: Any) -> bool:
    """A JSON object as the client leaves it: one of its models, or a dict it could not build one from."""
    return value is not None and not isinstance(value, str | bytes | int | float | bool | list | tuple)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", int: "a number", float: "a number", list: "a list", tuple: "a list",
            dict: "an object"}.get(type(value), "an object" if _is_object(value) else type(value).__name__)


def _malformed(where: str, field: str, value: Any, expected: str) -> EndpointError:
    return EndpointError(f"a malformed reply from {where}: {field} is {_kind(value)}, not {expected}")


def _check_parsed(resp: Any, where: str) -> None:
    # The client hands back the body as text when its content type is not JSON (a proxy's
    # HTML error page sent with status 200).
    if isinstance(resp, str | bytes):
        raise EndpointError(f"a reply from {where} that is not JSON: {resp[:120]!r}")


def reply_usage(resp: Any, where: str) -> tuple[int, int]:
    """(prompt tokens, completion tokens) as a reply reports them; 0 for what it leaves out."""
    _check_parsed(resp, where)
    usage = _field(resp, "usage")
    if usage is None:
        return 0, 0
    if not _is_object(usage):
        raise _malformed(where, "usage", usage, "an object")
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = _field(usage, name)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise _malformed(where, f"usage.{name}", value, "a count")
        counts.append(value or 0)
    return counts[0], counts[1]


def reply_choice(resp: Any, where: str) -> ChatReply:
    """The reply's first choice: its text, function calls, finish reason and token log-probs.
    Tool calls that are not function calls are left out, as they are not ours to make."""
    _check_parsed(resp, where)
    choices = _field(resp, "choices")
    if not choices:
        raise EndpointError(f"no choices in the reply from {where}")
    if not isinstance(choices, list):
        raise _malformed(where, "choices", choices, "a list")
    choice = choices[0]
    if not _is_object(choice):
        raise _malformed(where, "choices[0]", choice, "an object")
    message = _field(choice, "message")
    if not _is_object(message):
        raise _malformed(where, "choices[0].message", message, "an object")
    content = _field(message, "content")
    if content is not None and not isinstance(content, str):
        raise _malformed(where, "choices[0].message.content", content, "text or null")
    raw_calls = _field(message, "tool_calls")
    if raw_calls is not None and not isinstance(raw_calls, list):
        raise _malformed(where, "choices[0].message.tool_calls", raw_calls, "a list")
    calls = []
    for j, call in enumerate(raw_calls or []):
        at = f"choices[0].message.tool_calls[{j}]"
        if not _is_object(call):
            raise _malformed(where, at, call, "an object")
        fn = _field(call, "function")
        if fn is None:
            continue
        if not _is_object(fn):
            raise _malformed(where, f"{at}.function", fn, "an object")
        name, arguments = _field(fn, "name"), _field(fn, "arguments")
        if not isinstance(name, str) or not name:
            raise _malformed(where, f"{at}.function.name", name, "a name")
        if arguments is not None and not isinstance(arguments, str):
            raise _malformed(where, f"{at}.function.arguments", arguments, "JSON text")
        calls.append((name, arguments or ""))
    token_logprobs = None
    logprobs = _field(choice, "logprobs")
    if logprobs is not None:
        if not _is_object(logprobs):
            raise _malformed(where, "choices[0].logprobs", logprobs, "an object")
        tokens = _field(logprobs, "content")
        if tokens is not None and not isinstance(tokens, list):
            raise _malformed(where, "choices[0].logprobs.content", tokens, "a list")
        if tokens:
            values = []
            for k, token in enumerate(tokens):
                if not _is_object(token):
                    raise _malformed(where, f"choices[0].logprobs.content[{k}]", token, "an object")
                v = _field(token, "logprob")
                if not isinstance(v, int | float) or isinstance(v, bool):
                    raise _malformed(where, f"choices[0].logprobs.content[{k}].logprob", v, "a number")
                values.append(float(v))
            token_logprobs = tuple(values)
    finish = _field(choice, "finish_reason")
    return ChatReply(content or "", tuple(calls), finish if isinstance(finish, str) else "", token_logprobs)


class ChatEndpoint:
    """One chat model behind an OpenAI-compatible API, through the official `openai` client.

    `create` sends one `chat.completions` request and returns the client's reply object;
    `complete` sends messages with the endpoint's own `temperature` and `max_tokens` and
    returns the reply text. Both raise `EndpointError` when the request fails.

    `client` replaces the client built from the settings (an already configured
    OpenAI-compatible client); a pickled copy builds its own from the settings.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = DEFAULT_KEY_ENV,
                 timeout: float = 60.0, max_retries: int = 2, temperature: float = 0.0,
                 max_tokens: int = 512, client: Any = None) -> None:
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {base_url!r}")
        if not model:
            raise ValueError("model is required (the name the endpoint serves)")
        if timeout <= 0 or max_retries < 0:
            raise ValueError(f"need timeout > 0 and max_retries >= 0, got timeout={timeout}, "
                             f"max_retries={max_retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout, self.max_retries = timeout, max_retries
        self.temperature, self.max_tokens = temperature, max_tokens
        self._client: Any = client
        self._lock = threading.Lock()     # threads sharing one endpoint build one client
        if not os.environ.get(api_key_env) and parsed.hostname not in LOCAL_HOSTS and client is None:
            log.warning("$%s is unset; sending a placeholder key to %s", api_key_env, self.base_url)

    @property
    def where(self) -> str:
        """The endpoint as error messages name it."""
        return f"{self.base_url}/chat/completions (model {self.model!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The `openai.OpenAI` client (built on first use)."""
        with self._lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(base_url=self.base_url,
                                             api_key=os.environ.get(self.api_key_env) or PLACEHOLDER_KEY,
                                             timeout=self.timeout, max_retries=self.max_retries)
            return self._client

    def close(self) -> None:
        """Close the client's connections (a later request opens new ones)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    def create(self, **request: Any) -> Any:
        """One `chat.completions.create` request (`model` defaults to the endpoint's);
        the client's reply, or `EndpointError`."""
        import openai

        request.setdefault("model", self.model)
        try:
            return self.client.chat.completions.create(**request)
        except openai.APIError as exc:
            raise EndpointError(self.describe(exc)) from exc
        except ValueError as exc:   # the client parses the body with json: empty, cut short, not UTF-8
            from distillery.io import json_error

            raise EndpointError(f"a reply from {self.where} that is not JSON: {json_error(exc)}") from exc

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The reply text to `messages`, sampled with the endpoint's temperature and max_tokens."""
        resp = self.create(messages=messages, temperature=self.temperature, max_tokens=self.max_tokens)
        return reply_choice(resp, self.where).text

    def describe(self, exc: Exception) -> str:
        """What went wrong with a request, where, and whether it was retried."""
        import openai

        retried = f"after {self.max_retries} retries"
        if isinstance(exc, openai.APITimeoutError):
            msg = f"timed out after {self.timeout:g}s per attempt, {retried}: {self.where}"
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            msg = f"cannot connect, {retried}: {self.where}: {cause or exc}"
        elif isinstance(exc, openai.APIStatusError):
            retryable = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            msg = f"HTTP {exc.status_code}{' ' + retried if retryable else ''} from {self.where}: {exc.message}"
            if exc.status_code == 401 and not os.environ.get(self.api_key_env):
                msg += f" (no key sent: ${self.api_key_env} is unset)"
        else:
            msg = f"{type(exc).__name__} from {self.where}: {exc}"
        return msg[:MAX_ERROR_CHARS]

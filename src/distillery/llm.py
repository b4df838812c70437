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
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "EMPTY"   # what local servers (vLLM, Ollama, distillery serve) accept
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
MAX_ERROR_CHARS = 600


class EndpointError(RuntimeError):
    """An OpenAI-compatible endpoint could not answer (down, timed out, an HTTP error after
    the client's retries, or a reply with no choices)."""


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

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The reply text to `messages`, sampled with the endpoint's temperature and max_tokens."""
        resp = self.create(messages=messages, temperature=self.temperature, max_tokens=self.max_tokens)
        if not getattr(resp, "choices", None):
            raise EndpointError(f"no choices in the reply from {self.where}")
        return resp.choices[0].message.content or ""

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

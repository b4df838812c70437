"""Any OpenAI-compatible chat endpoint as a batched policy (vLLM, SGLang, Ollama, OpenAI,
or `distillery serve`).

`act` sends one chat request per context, at most `concurrency` in flight, and returns the
actions in order. Messages come from `agents.prompts.render_messages`, the same rendering
every chat-style backend uses.

Two modes, one trajectory format:

- ``text``: the model writes the compact call syntax (`list_dir(path="docs")`) and the
  environment parses it. Replies with prose around the call are reduced to the call.
- ``tools``: function calling. The environment's tools go out as JSON schemas, past actions
  go back as `tool_calls` with their observations as `tool` messages, and the returned call
  is written as canonical text with `format_call`. A trajectory reads the same in both modes.

Failures: retries are the `openai` client's own (exponential backoff with jitter from 0.5 s
up to 8 s, honouring `Retry-After`; on connection errors, timeouts, 408, 409, 429 and 5xx),
configured with `max_retries` and `timeout`. A request that still fails becomes an
`ActionOutput` with `error` set, which ends that episode as errored; it never raises, so one
dead endpoint cannot take down a rollout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import openai

from distillery.agents.prompts import render_messages
from distillery.envs.actions import format_call, parse_action
from distillery.envs.base import ToolSpec, tool_specs
from distillery.types import ActionOutput, Context, ToolCall

log = logging.getLogger(__name__)

MODES = ("text", "tools")
PLACEHOLDER_KEY = "EMPTY"   # what local servers (vLLM, Ollama, distillery serve) accept
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
_MAX_ERROR_CHARS = 600


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / 1e6


def parse_prices(prices: Mapping[str, Any] | None) -> dict[str, Price]:
    """Validate a price table `{model: {"input_per_mtok": $, "output_per_mtok": $}}`."""
    out: dict[str, Price] = {}
    for model, entry in (prices or {}).items():
        if not isinstance(entry, Mapping) or set(entry) != {"input_per_mtok", "output_per_mtok"}:
            raise ValueError(
                f"prices[{model!r}] must be {{input_per_mtok: $, output_per_mtok: $}}, got {entry!r}")
        vals = {}
        for k in ("input_per_mtok", "output_per_mtok"):
            v = entry[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"prices[{model!r}].{k} must be a non-negative number, got {v!r}")
            vals[k] = float(v)
        out[str(model)] = Price(**vals)
    return out


def request_seed(ctx: Context) -> int:
    """The per-request sampling seed; the same formula as `agents.hf._row_seed`, so a
    seeded endpoint running our model (`distillery serve`) samples what `HFPolicy` samples."""
    h = hashlib.blake2b(f"{ctx.seed}:{ctx.episode_id}:{ctx.t}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------------------
# Replies -> action text (pure functions)
# ---------------------------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
_CALL_START = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def extract_action(content: str, specs: Sequence[ToolSpec]) -> tuple[str, str]:
    """The action in a text reply, and a note when it had to be dug out of prose.

    A reply that already parses (the call on its first line) is returned as written, so the
    trajectory records what the model said. Otherwise the first span that parses as a call
    of a known tool — `name(...)` inside prose or code fences, or a JSON object — is taken.
    A reply with no call at all is returned stripped: the environment then tells the agent
    what was wrong, as it would for any invalid action.
    """
    text = content.strip()
    if not text or parse_action(text, specs).valid:
        return text, ""
    body = _THINK.sub("", text).strip()   # reasoning models may think out loud in content
    names = {s.name for s in specs}
    closes = [i for i, ch in enumerate(body) if ch == ")"]
    for m in _CALL_START.finditer(body):
        if m.group(1) not in names:
            continue
        for end in (c + 1 for c in closes if c >= m.end() - 1):
            span = body[m.start():end]
            if parse_action(span, specs).valid:
                return span, "took the call out of surrounding text"
    decoder = json.JSONDecoder()
    for i, ch in enumerate(body):
        if ch != "{":
            continue
        try:
            obj, _ = decoder.raw_decode(body, i)
        except json.JSONDecodeError:
            continue
        span = json.dumps(obj, ensure_ascii=False)
        if isinstance(obj, dict) and parse_action(span, specs).valid:
            return span, "took a JSON call out of surrounding text"
    return text, ""


def _ordered_args(name: str, args: dict[str, Any], specs: Sequence[ToolSpec]) -> dict[str, Any]:
    """Arguments in the tool's parameter order (as `parse_action` orders them), so a call
    made through function calling has the same canonical text as one written out."""
    spec = next((s for s in specs if s.name == name), None)
    order = [p.name for p in spec.params] if spec else []
    keys = [k for k in order if k in args] + [k for k in args if k not in order]
    out = {}
    for k in keys:
        v = args[k]
        out[k] = int(v) if isinstance(v, float) and v.is_integer() else v  # 45.0 -> 45
    return out


def tool_call_text(name: str, arguments: str | None, specs: Sequence[ToolSpec]) -> str:
    """A function call (name, JSON arguments) as the canonical text of the call.

    Arguments that are not a JSON object come back as a JSON action with the raw arguments,
    which the environment rejects with a message naming the problem.
    """
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return json.dumps({"tool": name, "arguments": arguments}, ensure_ascii=False)
    if not isinstance(args, dict):
        return json.dumps({"tool": name, "arguments": arguments}, ensure_ascii=False)
    return format_call(ToolCall(name, _ordered_args(name, args, specs)))


def tools_messages(messages: list[dict[str, Any]], specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """`render_messages` output rewritten for function calling: each past action that is a
    valid call becomes an assistant `tool_calls` message, and the observation it produced a
    `tool` message answering it. Invalid past actions stay text (no call was made)."""
    out: list[dict[str, Any]] = []
    pending_call: str | None = None
    n = 0
    for msg in messages:
        if msg["role"] == "assistant":
            parsed = parse_action(msg["content"], specs)
            if parsed.valid and parsed.call is not None:
                pending_call = f"call_{n}"
                n += 1
                out.append({"role": "assistant", "content": None, "tool_calls": [{
                    "id": pending_call, "type": "function",
                    "function": {"name": parsed.call.tool,
                                 "arguments": json.dumps(parsed.call.args, ensure_ascii=False)},
                }]})
                continue
            pending_call = None
        elif msg["role"] == "user" and pending_call is not None:
            out.append({"role": "tool", "tool_call_id": pending_call, "content": msg["content"]})
            pending_call = None
            continue
        out.append(dict(msg))
    return out


# ---------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------


class OpenAIPolicy:
    """A policy served by an OpenAI-compatible `/v1/chat/completions` endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        mode: str = "text",
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        prices: dict[str, dict[str, float]] | None = None,
        env: str = "stage",
        label: str = "",
        logprobs: bool = False,
    ) -> None:
        """Args:
            base_url: the endpoint's API root, e.g. ``http://127.0.0.1:8000/v1``.
            model: the model name the endpoint serves (recorded on every episode).
            api_key_env: name of the environment variable holding the key; when it is unset
                a placeholder is sent (local servers accept any key).
            mode: ``text`` (compact call syntax) or ``tools`` (function calling).
            temperature, top_p, max_tokens: sampling; each request also carries a seed
                derived from (episode seed, episode id, step), so seeded servers reproduce.
            concurrency: most requests in flight at once.
            timeout: seconds per attempt; max_retries: the client's retries after the first.
            prices: ``{model: {input_per_mtok, output_per_mtok}}`` in US dollars; a model
                missing from the table costs 0.
            env: whose tools the model is told about.
            label: the policy name recorded on trajectories (default ``openai``).
            logprobs: ask for the sampled tokens' log-probabilities (not every server has them).
        """
        if mode not in MODES:
            raise ValueError(f"openai policy: mode must be one of {MODES}, not {mode!r}")
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"openai policy: base_url must be an http(s) URL such as "
                             f"http://127.0.0.1:8000/v1, not {base_url!r}")
        if not model:
            raise ValueError("openai policy: `model` is required (the name the endpoint serves)")
        if concurrency < 1:
            raise ValueError(f"openai policy: concurrency must be >= 1, not {concurrency}")
        if max_tokens < 1:
            raise ValueError(f"openai policy: max_tokens must be >= 1, not {max_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"openai policy: need temperature >= 0 and 0 < top_p <= 1, "
                             f"got temperature={temperature}, top_p={top_p}")
        if timeout <= 0 or max_retries < 0:
            raise ValueError(f"openai policy: need timeout > 0 and max_retries >= 0, "
                             f"got timeout={timeout}, max_retries={max_retries}")
        self.name = label or "openai"
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.mode = mode
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        self.logprobs = logprobs
        self.prices = parse_prices(prices)
        self.price = self.prices.get(model)
        self.specs = tool_specs(env)
        self.tools = [s.json_schema() for s in self.specs]
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env, "")
        if not key and parsed.hostname not in _LOCAL_HOSTS:
            log.warning("openai policy: $%s is unset; sending a placeholder key to %s",
                        api_key_env, self.base_url)
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key or PLACEHOLDER_KEY,
                                    timeout=timeout, max_retries=max_retries)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="openai-policy")
        self.notes: Counter[str] = Counter()   # replies that needed repair, by kind

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": self.model, "mode": self.mode,
                "temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "concurrency": self.concurrency}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()

    def __enter__(self) -> OpenAIPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request ---------------------------------------------------------------------

    def request(self, ctx: Context) -> dict[str, Any]:
        """The keyword arguments of `chat.completions.create` for one context."""
        messages: list[dict[str, Any]] = render_messages(ctx, self.specs)
        kwargs: dict[str, Any] = {
            "model": self.model, "temperature": self.temperature, "top_p": self.top_p,
            "max_tokens": self.max_tokens, "seed": request_seed(ctx),
        }
        if self.mode == "tools":
            messages = tools_messages(messages, self.specs)
            kwargs["tools"] = self.tools
        if self.logprobs:
            kwargs["logprobs"] = True
        kwargs["messages"] = messages
        return kwargs

    def _note(self, kind: str, ctx: Context, detail: str = "") -> None:
        self.notes[kind] += 1
        if self.notes[kind] == 1:   # the first of each kind is worth a line; counts cover the rest
            log.warning("openai policy (%s): %s at %s step %d %s", self.model, kind,
                        ctx.episode_id, ctx.t, detail)

    def _error(self, exc: openai.APIError) -> str:
        where = f"{self.base_url}/chat/completions (model {self.model!r})"
        retried = f"after {self.max_retries} retries"
        if isinstance(exc, openai.APITimeoutError):
            msg = f"timed out after {self.timeout:g}s per attempt, {retried}: {where}"
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            msg = f"cannot connect, {retried}: {where}: {cause or exc}"
        elif isinstance(exc, openai.APIStatusError):
            retryable = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            msg = f"HTTP {exc.status_code}{' ' + retried if retryable else ''} from {where}: {exc.message}"
            if exc.status_code == 401 and not os.environ.get(self.api_key_env):
                msg += f" (no key sent: ${self.api_key_env} is unset)"
        else:
            msg = f"{type(exc).__name__} from {where}: {exc}"
        return msg[:_MAX_ERROR_CHARS]

    def act_one(self, ctx: Context) -> ActionOutput:
        try:
            resp = self.client.chat.completions.create(**self.request(ctx))
        except openai.APIError as exc:
            return ActionOutput(text="", error=self._error(exc))
        usage = resp.usage
        tokens_in = int(usage.prompt_tokens or 0) if usage else 0
        tokens_out = int(usage.completion_tokens or 0) if usage else 0
        cost = self.price.cost(tokens_in, tokens_out) if self.price else 0.0
        if not resp.choices:
            return ActionOutput(text="", tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost,
                                error=f"no choices in the reply from {self.base_url} (model {self.model!r})")
        choice = resp.choices[0]
        msg = choice.message
        calls = [c for c in (msg.tool_calls or []) if getattr(c, "function", None) is not None]
        if calls:
            if len(calls) > 1:
                self._note("several tool calls, took the first", ctx, f"({len(calls)} calls)")
            if self.mode == "text":
                self._note("tool call in text mode", ctx)
            text = tool_call_text(calls[0].function.name, calls[0].function.arguments, self.specs)
        else:
            if self.mode == "tools" and msg.content:
                self._note("text reply in tools mode", ctx)
            text, note = extract_action(msg.content or "", self.specs)
            if note:
                self._note(note, ctx)
            if not text:
                self._note(f"empty reply (finish_reason={choice.finish_reason})", ctx)
        out = ActionOutput(text=text, tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost)
        content_lp = choice.logprobs.content if choice.logprobs and choice.logprobs.content else None
        if content_lp:
            out.token_logprobs = [float(t.logprob) for t in content_lp]
            out.logprob = float(sum(out.token_logprobs))
        return out

    # -- the batch -----------------------------------------------------------------------

    def act(self, contexts: Sequence[Context]) -> list[ActionOutput]:
        """One request per context, `concurrency` at a time; outputs in the input order."""
        return list(self._pool.map(self.act_one, contexts))

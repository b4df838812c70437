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

Each context is answered with the tools of its own task's environment.

Transport, retries, timeouts and the key are `distillery.llm.ChatEndpoint`'s: the `openai`
client's own retries (exponential backoff with jitter from 0.5 s up to 8 s, honouring
`Retry-After`; on connection errors, timeouts, 408, 409, 429 and 5xx), configured with
`max_retries` and `timeout`. A request that still fails becomes an `ActionOutput` with
`error` set, which ends that episode as errored; it never raises, so one dead endpoint cannot
take down a rollout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from distillery.agents.prompts import render_messages
from distillery.envs.actions import format_call, parse_action
from distillery.envs.base import ToolSpec, tool_specs
from distillery.llm import DEFAULT_KEY_ENV, ChatEndpoint, EndpointError, reply_choice, reply_usage
from distillery.types import ActionOutput, Context, ToolCall

log = logging.getLogger(__name__)

MODES = ("text", "tools")


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
    start = _CALL_START.match(body)
    if start and start.group(1) in names and body == text:
        # A reply that begins as a call of a known tool is that call, malformed or not: the
        # environment says what is wrong, as it does for the same text from an in-process
        # model (`hf`), so a served model scores what it scores locally.
        return text, ""
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
        except ValueError:          # JSONDecodeError, or a number too long to convert
            continue
        span = json.dumps(obj, ensure_ascii=False)
        if isinstance(obj, dict) and parse_action(span, specs).valid:
            return span, "took a JSON call out of surrounding text"
    return text, ""


def ordered_args(name: str, args: dict[str, Any], specs: Sequence[ToolSpec]) -> dict[str, Any]:
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
    except ValueError:              # JSONDecodeError, or a number too long to convert
        return json.dumps({"tool": name, "arguments": arguments}, ensure_ascii=False)
    if not isinstance(args, dict):
        return json.dumps({"tool": name, "arguments": arguments}, ensure_ascii=False)
    return format_call(ToolCall(name, ordered_args(name, args, specs)))


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
        api_key_env: str = DEFAULT_KEY_ENV,
        mode: str = "text",
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        prices: dict[str, dict[str, float]] | None = None,
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
            label: the policy name recorded on trajectories (default ``openai``).
            logprobs: ask for the sampled tokens' log-probabilities (not every server has them).
        """
        if mode not in MODES:
            raise ValueError(f"openai policy: mode must be one of {MODES}, not {mode!r}")
        try:
            self.endpoint = ChatEndpoint(base_url, model, api_key_env, timeout, max_retries)
        except ValueError as exc:
            raise ValueError(f"openai policy: {exc}") from None
        if concurrency < 1:
            raise ValueError(f"openai policy: concurrency must be >= 1, not {concurrency}")
        if max_tokens < 1:
            raise ValueError(f"openai policy: max_tokens must be >= 1, not {max_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"openai policy: need temperature >= 0 and 0 < top_p <= 1, "
                             f"got temperature={temperature}, top_p={top_p}")
        self.name = label or "openai"
        self.model = model
        self.base_url = self.endpoint.base_url
        self.mode = mode
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.concurrency = concurrency
        self.logprobs = logprobs
        self.prices = parse_prices(prices)
        self.price = self.prices.get(model)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="openai-policy")
        self.notes: Counter[str] = Counter()   # replies that needed repair, by kind

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": self.model, "mode": self.mode,
                "temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "concurrency": self.concurrency}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.endpoint.close()

    def __enter__(self) -> OpenAIPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request ---------------------------------------------------------------------

    def request(self, ctx: Context) -> dict[str, Any]:
        """The keyword arguments of `chat.completions.create` for one context."""
        specs = tool_specs(ctx.task.env)
        messages: list[dict[str, Any]] = render_messages(ctx, specs)
        kwargs: dict[str, Any] = {
            "model": self.model, "temperature": self.temperature, "top_p": self.top_p,
            "max_tokens": self.max_tokens, "seed": request_seed(ctx),
        }
        if self.mode == "tools":
            messages = tools_messages(messages, specs)
            kwargs["tools"] = [s.json_schema() for s in specs]
        if self.logprobs:
            kwargs["logprobs"] = True
        kwargs["messages"] = messages
        return kwargs

    def _note(self, kind: str, ctx: Context, detail: str = "") -> None:
        self.notes[kind] += 1
        if self.notes[kind] == 1:   # the first of each kind is worth a line; counts cover the rest
            log.warning("openai policy (%s): %s at %s step %d %s", self.model, kind,
                        ctx.episode_id, ctx.t, detail)

    def act_one(self, ctx: Context) -> ActionOutput:
        try:
            resp = self.endpoint.create(**self.request(ctx))
            tokens_in, tokens_out = reply_usage(resp, self.endpoint.where)
        except EndpointError as exc:
            return ActionOutput(text="", error=str(exc))
        cost = self.price.cost(tokens_in, tokens_out) if self.price else 0.0
        try:
            reply = reply_choice(resp, self.endpoint.where)
        except EndpointError as exc:
            return ActionOutput(text="", tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost, error=str(exc))
        specs = tool_specs(ctx.task.env)
        if reply.calls:
            if len(reply.calls) > 1:
                self._note("several tool calls, took the first", ctx, f"({len(reply.calls)} calls)")
            if self.mode == "text":
                self._note("tool call in text mode", ctx)
            text = tool_call_text(*reply.calls[0], specs)
        else:
            if self.mode == "tools" and reply.text:
                self._note("text reply in tools mode", ctx)
            text, note = extract_action(reply.text, specs)
            if note:
                self._note(note, ctx)
            if not text:
                self._note(f"empty reply (finish_reason={reply.finish_reason or None})", ctx)
        out = ActionOutput(text=text, tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost)
        if reply.token_logprobs:
            out.token_logprobs = list(reply.token_logprobs)
            out.logprob = float(sum(out.token_logprobs))
        return out

    # -- the batch -----------------------------------------------------------------------

    def act(self, contexts: Sequence[Context]) -> list[ActionOutput]:
        """One request per context, `concurrency` at a time; outputs in the input order."""
        return list(self._pool.map(self.act_one, contexts))

"""`distillery serve MODEL_DIR`: a model trained here as an OpenAI-compatible endpoint.

Endpoints: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions` (streaming or
not), `GET /health`.
Anything that speaks the OpenAI API (the `openai` client, `OpenAIPolicy`, other people's
agent harnesses) can then drive the model.

Prompting follows the model's card (`prompt.style`):

- ``compact`` (the small models trained here): the chat messages are turned back into the
  episode they describe (`messages_to_context`, the inverse of `prompts.render_messages`)
  and rendered with `prompts.render_compact_ids`, so `OpenAIPolicy(mode="text")` talking to
  this server feeds the model exactly the token ids `HFPolicy` would for the same context.
  What such a prompt leaves out of a request (system text other than the experience block,
  the offered tools, turns and observation text over the budgets) is named in the reply's
  `x-distillery-prompt-notes` header (`compact_prompt_notes`) and in the request's log line;
  the request is still answered, as HFPolicy would act on that context.
- ``chat`` (instruct checkpoints): the tokenizer's chat template over the messages as sent.

Generation goes through `lm.generate.generate`. Requests arriving within `batch_wait_ms` of
one another (at most MAX_BATCH_WAIT_S: a longer window is clipped to it; and those that
queued while the previous batch ran) are decoded together in
one batched, KV-cached `generate` call; a single worker thread owns the model. Streaming
sends the chunks once the request's batch has finished decoding (`generate` has no
per-token hook), so a stream has the protocol but not an earlier first token.

A bad request is a 4xx in the OpenAI error format and costs the server nothing: a body
over `max_request_bytes` (413) or without a length (411) is refused before it is read,
`max_tokens` beyond the model's whole context is a 400 (within it, it is clipped to the
room the prompt leaves), text that is not UTF-8 is a 400 before it reaches the tokenizer,
and a client that goes away mid-stream or mid-batch leaves the others' requests as they
were. `bench/serve_load.py` measures the server under concurrent load.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from distillery.agents.openai import tool_call_text
from distillery.agents.prompts import (
    EXPERIENCE_ITEM,
    EXPERIENCE_TEMPLATE,
    FIRST_USER_TEMPLATE,
    MARKERS,
    CompactCuts,
    PromptConfig,
    PromptTooLong,
    render_compact,
)
from distillery.envs.actions import parse_action
from distillery.envs.base import ToolParam, ToolSpec
from distillery.types import Context, Task, Turn

log = logging.getLogger("distillery.serve")

API_KEY_ENV = "DISTILLERY_API_KEY"
# Larger bodies are refused unread (413): tokenizing megabytes holds the tokenizer, and with
# it every other request, for seconds. A long agent conversation is tens of kilobytes.
MAX_REQUEST_BYTES = 1 << 20
# The most new tokens a request may ask of a model whose context length is unknown.
MAX_NEW_TOKENS_UNKNOWN_CONTEXT = 32_768


class ServeError(RuntimeError):
    """The server cannot start: a missing or unusable model directory, a busy port."""


class APIError(Exception):
    """An error answered in the OpenAI format: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content={"error": {
            "message": self.message, "type": self.type, "param": self.param, "code": self.code}})


# ---------------------------------------------------------------------------------------
# Chat messages -> the episode they describe (inverse of prompts.render_messages)
# ---------------------------------------------------------------------------------------

# Derived from the templates themselves so that a template change cannot silently break
# the inversion: the import fails instead, and tests/test_serve.py checks the round trip.
_TASK_PREFIX, _rest = FIRST_USER_TEMPLATE.split("{instruction}")
_TASK_SEP, _tail = _rest.split("{observation}")
_EXP_HEAD = EXPERIENCE_TEMPLATE.split("{items}")[0]
_ITEM_PREFIX = EXPERIENCE_ITEM.split("{text}")[0]
if _tail or not _TASK_SEP or not _EXP_HEAD or not _ITEM_PREFIX:
    raise ImportError("serve.messages_to_context no longer matches prompts.FIRST_USER_TEMPLATE / "
                      "EXPERIENCE_TEMPLATE; update it alongside the templates")


def _experience_items(system: str) -> list[str]:
    """The experience items of a system message rendered by `render_messages`, else []."""
    at = system.find("\n\n" + _EXP_HEAD)
    if at >= 0:
        body = system[at + 2 + len(_EXP_HEAD):]
    elif system.startswith(_EXP_HEAD):
        body = system[len(_EXP_HEAD):]
    else:
        return []
    if not body.startswith(_ITEM_PREFIX):
        return [body] if body else []
    # Items joined again with "\n" + prefix give back exactly this text, which is what the
    # compact prompt encodes, even if an item itself spans lines.
    return body[len(_ITEM_PREFIX):].split("\n" + _ITEM_PREFIX)


def messages_to_context(messages: Sequence[dict[str, Any]]) -> Context:
    """Turn chat messages written by `render_messages` back into a `Context`.

    System messages may carry the experience block; then user (or tool) and assistant
    messages alternate, starting and ending with a user message. The first user message is
    ``"Task: {instruction}\\n\\n{observation}"``, split at the first blank line (an
    instruction is one paragraph; observations may have several). Assistant messages are
    the past actions (a function call is written as its canonical text), later user or tool
    messages the observations. Raises ValueError saying what is out of place.
    """
    system = "\n\n".join(m["content"] or "" for m in messages if m["role"] in ("system", "developer"))
    convo = [m for m in messages if m["role"] not in ("system", "developer")]
    if not convo:
        raise ValueError("no user message: the first user message states the task")
    texts: list[str] = []
    for i, m in enumerate(convo):
        want = "assistant" if i % 2 else "user"
        role = "user" if m["role"] == "tool" else m["role"]
        if role != want:
            raise ValueError(
                f"messages[{i}] (after system messages) is {m['role']!r} but a {want} message was "
                "expected: this model's prompts alternate user (observation) and assistant (action)")
        calls = m.get("tool_calls") or []
        if role == "assistant" and calls:
            fn = calls[0]["function"]
            texts.append(tool_call_text(fn["name"], fn.get("arguments"), ()))
        else:
            texts.append(m["content"] or "")
    if len(convo) % 2 == 0:
        raise ValueError("the last message must be a user message (the current observation)")
    first = texts[0]
    if first.startswith(_TASK_PREFIX):
        instruction, _, observation = first[len(_TASK_PREFIX):].partition(_TASK_SEP)
    else:   # a client that does not follow our format: the whole message is the task
        instruction, observation = first, ""
    obs = [observation, *texts[2::2]]
    history = [Turn(observation=o, action=a) for o, a in zip(obs[:-1], texts[1::2], strict=True)]
    task = Task(task_id="request", family="", split="", profile="", hint="",
                instruction=instruction, initial_state={}, reference_solution=[], checks=[])
    return Context(episode_id="request", task=task, t=len(history), observation=obs[-1],
                   history=history, experience=_experience_items(system))


PROMPT_NOTES_HEADER = "x-distillery-prompt-notes"
# What each note means, logged (as a warning) the first time a server sees it.
PROMPT_NOTES = {
    "system-dropped": "system/developer text other than the 'Lessons from earlier work for this user:' "
                      "block is not in a compact prompt",
    "tools-not-in-prompt": "offered tools are not in a compact prompt (a reply is still returned as a "
                           "tool call when it parses as one)",
    "assistant-content-dropped": "a compact prompt keeps one action per assistant message: its first tool "
                                 "call, else its text",
    "experience-cut": "the experience block was cut to prompt.max_experience_tokens",
    "observation-cut": "the current observation was cut to fit prompt.max_prompt_tokens",
    "history-cut": "older turns were left out (history-cut=K/N: K of the N past turns kept, within "
                   "prompt.max_history_turns and max_prompt_tokens)",
    "past-observations-cut": "past observations were cut to prompt.max_observation_tokens",
}


def compact_prompt_notes(messages: Sequence[dict[str, Any]], tools: Sequence[Any] | None,
                         ctx: Context, cuts: CompactCuts) -> list[str]:
    """What of a request the compact prompt for `ctx` leaves out, as `PROMPT_NOTES` names
    (``history-cut=K/N``: K of N past turns kept; ``past-observations-cut=M``); `cuts` is
    what `prompts.render_compact` reported for it."""
    notes = []
    system = "\n\n".join(m["content"] or "" for m in messages if m["role"] in ("system", "developer"))
    at = system.find("\n\n" + _EXP_HEAD)
    dropped = system[:at] if at >= 0 else "" if system.startswith(_EXP_HEAD) else system
    if dropped.strip():
        notes.append("system-dropped")
    if tools:
        notes.append("tools-not-in-prompt")
    if any(m["role"] == "assistant" and m.get("tool_calls") and (len(m["tool_calls"]) > 1 or m["content"])
           for m in messages):
        notes.append("assistant-content-dropped")
    if cuts.experience:
        notes.append("experience-cut")
    if cuts.observation:
        notes.append("observation-cut")
    if cuts.turns_kept < len(ctx.history):
        notes.append(f"history-cut={cuts.turns_kept}/{len(ctx.history)}")
    if cuts.past_observations_cut:
        notes.append(f"past-observations-cut={cuts.past_observations_cut}")
    return notes


# ---------------------------------------------------------------------------------------
# Request bodies (the subset of the OpenAI schema this server honours)
# ---------------------------------------------------------------------------------------


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _FunctionCall(BaseModel):
    name: str
    arguments: str | None = None


class _ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    type: str = "function"
    function: _FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_ContentPart] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str | None:
        if self.content is None or isinstance(self.content, str):
            return self.content
        bad = [p.type for p in self.content if p.type != "text"]
        if bad:
            raise APIError(400, f"only text content is supported, not {bad}", param="messages")
        return "".join(p.text or "" for p in self.content)


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """Unknown fields are ignored (as vLLM does); known-but-unsupported ones give a 400."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: int | None = Field(default=1, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None

    def check_supported(self) -> None:
        if (self.n or 1) != 1:
            raise APIError(400, f"n={self.n} is not supported: this server returns one choice (n=1)",
                           param="n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise APIError(400, f"{name} is not supported (send 0 or leave it out)", param=name)
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported", param="logit_bias")
        if self.top_logprobs:
            raise APIError(400, "top_logprobs is not supported; logprobs=true gives the sampled "
                           "tokens' log-probabilities", param="top_logprobs")
        if self.stream and self.logprobs:
            raise APIError(400, "logprobs are not supported with stream=true", param="logprobs")
        # Fields that change what a reply must be: ignoring them would answer another question.
        if self.tool_choice not in (None, "auto", "none"):
            forced = self.tool_choice == "required" or isinstance(self.tool_choice, dict)
            raise APIError(400, f"tool_choice={self.tool_choice!r} is not supported: " + (
                "this server cannot force a tool call; send 'auto' or 'none'" if forced
                else "expected 'auto', 'none', 'required' or {type: function, function: {name}}"),
                param="tool_choice")
        extra = self.model_extra or {}
        for name in ("functions", "function_call"):
            if extra.get(name) is not None:
                raise APIError(400, f"{name} (the deprecated function-calling fields) is not supported; "
                               "send tools instead", param=name)
        fmt = extra.get("response_format")
        if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
            raise APIError(400, "response_format is not supported (this server cannot constrain the "
                           "reply to JSON); leave it out or send {type: text}", param="response_format")

    def stops(self) -> tuple[str, ...]:
        s = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(x for x in s if x)


def _tool_specs(tools: Sequence[dict[str, Any]]) -> list[ToolSpec]:
    """Function schemas from a request, as specs `parse_action` can check a reply against."""
    specs = []
    for i, t in enumerate(tools):
        fn = t.get("function") if t.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise APIError(400, "each tool must be {type: function, function: {name, parameters}}",
                           param="tools")
        where = f"tools[{i}].function.parameters"
        params = fn.get("parameters") or {}
        if not isinstance(params, dict):
            raise APIError(400, f"{where} must be a JSON Schema object, got {type(params).__name__}", param=where)
        listed = params.get("required") or []
        if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
            raise APIError(400, f"{where}.required must be a list of parameter names", param=f"{where}.required")
        props = params.get("properties") or {}
        if not isinstance(props, dict):
            raise APIError(400, f"{where}.properties must be an object of parameter schemas, got "
                                f"{type(props).__name__}", param=f"{where}.properties")
        for name, p in props.items():
            if p is not None and not isinstance(p, dict):
                raise APIError(400, f"{where}.properties.{name} must be a JSON Schema object, got "
                                    f"{type(p).__name__}", param=f"{where}.properties.{name}")
        required = set(listed)
        specs.append(ToolSpec(fn["name"], str(fn.get("description", "")), tuple(
            ToolParam(name, "integer" if (p or {}).get("type") == "integer" else "string",
                      required=name in required)
            for name, p in (params.get("properties") or {}).items())))
    return specs


# ---------------------------------------------------------------------------------------
# The engine: model, prompts, batched generation (runs on one worker thread)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: tuple[str, ...] = ()


@dataclass
class GenResult:
    token_ids: list[int]         # completion tokens; the stop token included when one ended it
    logprobs: list[float]        # one per completion token
    text: str                    # decoded, without the stop token or stop string
    text_ids: list[int]          # the tokens `text` was decoded from
    finish_reason: str           # "stop" | "length"
    prompt_tokens: int
    batch_size: int = 1          # rows decoded together with this one


class Engine:
    """A loaded model with what serving it needs: its prompt format and stop tokens."""

    def __init__(self, model: Any, tokenizer: Any, card: dict[str, Any] | None = None, *,
                 name: str = "model", device: str = "auto") -> None:
        from distillery.agents.hf import resolve_device

        card = card or {}
        self.name = name
        self.card = card
        self.tok = tokenizer
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.created = int(time.time())
        self.prompt = self._prompt_config(card, tokenizer)
        stops = set()
        for eos in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            stops.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.prompt.style == "compact":
            stops.add(int(tokenizer.convert_tokens_to_ids(MARKERS["end"])))
        if not stops:
            raise ServeError(f"{name}: the tokenizer has no eos token, so generation could not stop")
        self.stop_ids = sorted(stops)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.max_context: int | None = getattr(model.config, "max_position_embeddings", None)
        # The fast tokenizer is shared by request handlers (encode) and the worker (decode);
        # its Rust core rejects concurrent mutable use, so all use goes through this lock.
        self.tok_lock = threading.Lock()

    @staticmethod
    def _prompt_config(card: dict[str, Any], tok: Any) -> PromptConfig:
        if "prompt" in card:
            if not isinstance(card["prompt"], dict):
                raise ServeError("card.json: prompt must be an object of prompt settings")
            unknown = sorted(set(card["prompt"]) - set(PromptConfig.__dataclass_fields__))
            if unknown:
                raise ServeError(f"card.json: prompt: unknown setting {', '.join(map(repr, unknown))} (known: "
                                 f"{', '.join(PromptConfig.__dataclass_fields__)})")
            try:
                return PromptConfig(**card["prompt"])
            except (TypeError, ValueError) as e:
                raise ServeError(f"card.json: prompt: {e}") from e
        if getattr(tok, "chat_template", None):
            return PromptConfig(style="chat")
        if tok.convert_tokens_to_ids(MARKERS["action"]) not in (None, tok.unk_token_id):
            return PromptConfig(style="compact")
        raise ServeError("the model card has no prompt format and the tokenizer has neither a chat "
                         "template nor our marker tokens: there is no way to build its prompts")

    # -- prompts -------------------------------------------------------------------------

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[int]:
        """Prompt ids for a conversation. Raises APIError(400) for one this model cannot take."""
        return self.render_noted(messages, tools)[0]

    def render_noted(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]] | None) -> tuple[list[int], list[str]]:
        """`render`'s ids, and what of the request the prompt leaves out (`compact_prompt_notes`;
        none for chat-template models, whose template sees the messages as sent)."""
        notes: list[str] = []
        with self.tok_lock:
            if self.prompt.style == "compact":
                try:
                    ctx = messages_to_context(messages)
                    ids, cuts = render_compact(ctx, self.tok, self.prompt)
                except PromptTooLong as e:
                    # The task (first user message) and the experience block are never cut; the
                    # budget is the server's, so say what the client can change.
                    raise APIError(400, f"the request's messages are too long for this model's prompt budget "
                                   f"of {self.prompt.max_prompt_tokens} tokens (set by the model card's "
                                   "prompt.max_prompt_tokens): the task in the first user message and the "
                                   "experience block of the system message alone do not fit; send a shorter "
                                   "conversation", param="messages", code="context_length_exceeded") from e
                except ValueError as e:
                    raise APIError(400, f"cannot build a prompt for this model: {e}",
                                   param="messages") from e
                notes = compact_prompt_notes(messages, tools, ctx, cuts)
            else:
                from jinja2.exceptions import TemplateError, TemplateSyntaxError

                try:
                    out = self.tok.apply_chat_template(messages, tools=tools or None,
                                                       add_generation_prompt=True, tokenize=True)
                except TemplateSyntaxError:
                    raise   # the model's own template is broken: a server error
                except TemplateError as e:
                    # The template refused this conversation (`raise_exception(...)`: roles
                    # that do not alternate, a system message it does not take, ...).
                    raise APIError(400, f"this model's chat template cannot take these messages: {e}",
                                   param="messages") from e
                ids = list(out["input_ids"] if isinstance(out, Mapping) else out)
        if self.max_context is not None and len(ids) >= self.max_context:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is "
                           f"{self.max_context}", param="messages", code="context_length_exceeded")
        return ids, notes

    def max_new_tokens(self, prompt_len: int, requested: int | None) -> int:
        """What was asked for, clipped to the context left after the prompt. Asking for more
        than the model's whole context (or, context unknown, more than
        MAX_NEW_TOKENS_UNKNOWN_CONTEXT) is a 400: no prompt could make that possible."""
        room = self.max_context - prompt_len if self.max_context is not None else None
        if requested is None:
            return room if room is not None else 512
        limit = self.max_context if self.max_context is not None else MAX_NEW_TOKENS_UNKNOWN_CONTEXT
        if requested > limit:
            raise APIError(400, f"max_tokens={requested} is more than this model's context of {limit} "
                           "tokens", param="max_tokens", code="context_length_exceeded")
        return min(requested, room) if room is not None else requested

    def decode(self, ids: Sequence[int]) -> str:
        # Special tokens are kept, as HFPolicy keeps them: marker tokens are part of the
        # compact syntax, and the server must return what the policy would have seen.
        return self.tok.decode(list(ids), skip_special_tokens=False)

    # -- generation (worker thread) ------------------------------------------------------

    def generate_batch(self, reqs: Sequence[GenRequest]) -> list[GenResult]:
        """Decode `reqs` together: one `generate` call per distinct (temperature, top_p)."""
        from distillery.lm.generate import SamplingConfig, generate

        groups: dict[tuple[float, float], list[int]] = {}
        for i, r in enumerate(reqs):
            key = (r.temperature, r.top_p) if r.temperature > 0 else (0.0, 1.0)
            groups.setdefault(key, []).append(i)
        results: list[GenResult | None] = [None] * len(reqs)
        for (temperature, top_p), idx in groups.items():
            # Rows draw from their own seeded generators, so a row's first k tokens do not
            # depend on how long its batch-mates run: the batch runs to the longest limit
            # and each row is cut to its own.
            sampling = SamplingConfig(temperature, top_p, max(reqs[i].max_new_tokens for i in idx))
            gens = generate(self.model, [reqs[i].prompt_ids for i in idx], stop_ids=self.stop_ids,
                            pad_id=self.pad_id, sampling=sampling, seeds=[reqs[i].seed for i in idx])
            with self.tok_lock:
                for i, g in zip(idx, gens, strict=True):
                    results[i] = self._result(reqs[i], g.token_ids, g.logprobs, g.stopped, len(idx))
        return [r for r in results if r is not None]

    def _result(self, req: GenRequest, ids: list[int], lps: list[float], stopped: bool,
                batch: int) -> GenResult:
        if len(ids) > req.max_new_tokens:   # its batch ran longer than this row asked for
            ids, lps, stopped = ids[: req.max_new_tokens], lps[: req.max_new_tokens], False
        text_ids = ids[:-1] if stopped else ids
        text = self.decode(text_ids)
        cuts = [text.find(s) for s in req.stop if s in text]
        if cuts:
            # Count as generated only the tokens up to the one completing the stop string.
            lo, hi = 1, len(text_ids)
            while lo < hi:
                mid = (lo + hi) // 2
                if any(s in self.decode(text_ids[:mid]) for s in req.stop):
                    hi = mid
                else:
                    lo = mid + 1
            ids, lps, text, stopped = text_ids[:lo], lps[:lo], text[: min(cuts)], True
            text_ids = ids
        return GenResult(ids, lps, text, text_ids, "stop" if stopped else "length",
                         len(req.prompt_ids), batch)

    def text_deltas(self, ids: Sequence[int], text: str) -> list[str]:
        """`text` cut into per-token pieces for streaming; they always join back to `text`.

        A token that ends inside a multi-byte character is held back until it completes.
        """
        out: list[str] = []
        sent = ""
        with self.tok_lock:
            for k in range(1, len(ids) + 1):
                s = self.decode(ids[:k])[: len(text)]
                if s.endswith("\ufffd") or not text.startswith(s):
                    continue
                if len(s) > len(sent):
                    out.append(s[len(sent):])
                    sent = s
        if sent != text:
            out.append(text[len(sent):])
        return out


def load_engine(model_dir: str | Path, *, name: str | None = None, device: str = "auto") -> Engine:
    """Load a directory written by `lm.model.save_model_dir` (or a local HF checkpoint)."""
    from distillery.agents.hf import resolve_device

    try:
        resolve_device(device)      # before minutes of loading, not after
    except ValueError as e:
        raise ServeError(str(e)) from e
    path = Path(model_dir)
    if not path.exists():
        raise ServeError(f"{path}: no such directory")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ServeError(f"{path} is not a model directory (no config.json): expected a directory "
                         "written by lm.model.save_model_dir, or a Hugging Face checkpoint")
    from distillery.lm.model import CARD_FILE, ModelLoadError, load_model_dir, read_card

    card_file = path / CARD_FILE
    try:
        card_json = read_card(card_file)
    except ModelLoadError as e:
        raise ServeError(str(e)) from e
    if not isinstance(card_json.get("prompt", {}), dict):
        raise ServeError(f"{card_file}: prompt must be an object of prompt settings")
    if card_json.get("prompt", {}).get("style") == "vision" or _has_vision_tower(path / "config.json"):
        # Its prompts are image tokens plus pixels, which this engine's text batching cannot carry.
        raise ServeError(f"{path} is a vision-language model (the vision and table-image tracks): `distillery serve` serves text "
                         "models only; decode it with distillery.vision (docs/vision.md)")
    try:
        model, tokenizer, card = load_model_dir(path)
    except ModelLoadError as e:
        raise ServeError(str(e)) from e
    except (OSError, ValueError, KeyError) as e:
        raise ServeError(f"{path}: cannot load the model: {e}") from e
    # A trailing slash (shell completion adds one) is not part of the name clients send.
    default = str(model_dir).rstrip("/" + os.sep) or str(model_dir)
    return Engine(model, tokenizer, card, name=name or default, device=device)


def _has_vision_tower(config_file: Path) -> bool:
    """Whether a checkpoint's config describes an image-text model (a LLaVA-style `vision_config`),
    whatever its card says (the table-image track's cards name no prompt style)."""
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False        # load_model_dir names what is wrong with it
    return isinstance(config, dict) and isinstance(config.get("vision_config"), dict)


# ---------------------------------------------------------------------------------------
# Micro-batching: requests that arrive close together share one generate call
# ---------------------------------------------------------------------------------------


@dataclass
class _Pending:
    req: GenRequest
    future: asyncio.Future[GenResult]
    arrived: float


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    largest: int = 0

    @property
    def mean_batch(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


# The longest a first request waits for others to join its batch. A longer window would only
# add latency (and an unbounded one would hold every request, and a graceful shutdown that
# waits for them, for ever), so larger values are clipped to it.
MAX_BATCH_WAIT_S = 1.0


class Batcher:
    """Collects requests for up to `wait_s` after the first one (or until `max_batch`), then
    decodes them in one `generate` call on the single model thread. Requests that queue
    while a batch runs go into the next one without further waiting. `wait_s` is clipped to
    MAX_BATCH_WAIT_S; one that is not a number >= 0 is a ValueError."""

    def __init__(self, engine: Engine, max_batch: int = 32, wait_s: float = 0.005) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch}")
        if not wait_s >= 0:   # NaN too
            raise ValueError(f"the batch window must be a number of seconds >= 0, not {wait_s}")
        self.engine, self.max_batch, self.wait_s = engine, max_batch, min(float(wait_s), MAX_BATCH_WAIT_S)
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="generate")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            p = self._queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(APIError(503, "the server is shutting down",
                                                type="server_error"))
        self._worker.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def submit(self, req: GenRequest) -> GenResult:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[GenResult] = loop.create_future()
        self._queue.put_nowait(_Pending(req, fut, loop.time()))
        return await fut

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        first = await self._queue.get()
        batch = [first]
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = first.arrived + self.wait_s - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return [p for p in batch if not p.future.done()]   # clients that left are dropped

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(
                    self._worker, self.engine.generate_batch, [p.req for p in batch])
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(APIError(503, "the server is shutting down",
                                                        type="server_error"))
                raise
            except Exception as e:  # noqa: BLE001 - each waiting request answers 500; the loop lives
                log.exception("generation failed for a batch of %d", len(batch))
                err = APIError(500, f"generation failed: {type(e).__name__}: {e}", type="server_error")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            self.stats.requests += len(batch)
            self.stats.batches += 1
            self.stats.largest = max(self.stats.largest, len(batch))
            for p, r in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(r)


# ---------------------------------------------------------------------------------------
# The HTTP app
# ---------------------------------------------------------------------------------------


def _usage(r: GenResult) -> dict[str, int]:
    n = len(r.token_ids)
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": n, "total_tokens": r.prompt_tokens + n}


def _tool_call(r: GenResult, specs: list[ToolSpec]) -> dict[str, Any] | None:
    """The reply as a function call, when tools were offered and the text is a valid call."""
    if not specs:
        return None
    parsed = parse_action(r.text, specs)
    if not parsed.valid or parsed.call is None:
        return None
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {
        "name": parsed.call.tool, "arguments": json.dumps(parsed.call.args, ensure_ascii=False)}}


def _not_utf8(messages: list[dict[str, Any]]) -> str | None:
    """The first message field that is not valid UTF-8 text (lone surrogates from JSON
    escapes), as `messages[i].field`, else None."""
    for i, m in enumerate(messages):
        fields = [("content", m.get("content")), *[(f"tool_calls.{j}.function", json.dumps(c))
                                                     for j, c in enumerate(m.get("tool_calls") or [])]]
        for name, text in fields:
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    return f"messages.{i}.{name}"
    return None


def create_app(engine: Engine, *, api_key: str | None = None, max_batch: int = 32,
               batch_wait_ms: float = 5.0, max_request_bytes: int = MAX_REQUEST_BYTES) -> FastAPI:
    """The ASGI app serving `engine`. `api_key` set: /v1 routes need `Bearer <key>`.
    Request bodies over `max_request_bytes` are refused unread. `batch_wait_ms` over
    MAX_BATCH_WAIT_S (in ms) is clipped to it; one that is not a number >= 0 is a ValueError."""
    if not batch_wait_ms >= 0:   # NaN too; refused here, not when the server starts
        raise ValueError(f"batch_wait_ms must be a number of milliseconds >= 0, not {batch_wait_ms}")
    state: dict[str, Batcher] = {}
    noted: set[str] = set()   # prompt notes already explained in the log

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["batcher"] = Batcher(engine, max_batch=max_batch, wait_s=batch_wait_ms / 1000)
        state["batcher"].start()
        window_ms = state["batcher"].wait_s * 1000
        if window_ms < batch_wait_ms:
            log.warning("batch window %g ms clipped to %g ms (MAX_BATCH_WAIT_S)", batch_wait_ms, window_ms)
        log.info("serving %r (%s prompts, device %s, max batch %d, window %.1f ms, api key %s)",
                 engine.name, engine.prompt.style, engine.device, max_batch, window_ms,
                 "required" if api_key else "not required")
        yield
        await state["batcher"].stop()
        log.info("stopped serving %r", engine.name)

    app = FastAPI(title="distillery serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        if first.get("type") == "json_invalid":   # its loc is a byte offset, not a field
            where = first.get("loc", ())[1:]
            why = (first.get("ctx") or {}).get("error", "")
            return APIError(400, f"invalid request: the body is not valid JSON ({why or 'decode error'}"
                                 f"{f' at character {where[0]}' if where else ''})").response()
        if tuple(first.get("loc", ())) == ("body",):   # not an object: a list, a string, a form
            return APIError(400, "invalid request: the body must be a JSON object sent with "
                                 "'Content-Type: application/json'").response()
        param = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        msg = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())[1:])}: {e.get('msg')}" for e in errs[:5])
        return APIError(400, f"invalid request: {msg}", param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return APIError(exc.status_code, str(exc.detail),
                        type="not_found_error" if exc.status_code == 404 else "invalid_request_error"
                        ).response()

    @app.middleware("http")
    async def _auth_and_log(request: Request, call_next: Any) -> Any:
        t0 = time.perf_counter()
        if api_key and request.url.path.startswith("/v1"):
            scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
            # The scheme is case-insensitive (RFC 9110); the key itself is compared exactly.
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
                response = APIError(401, "missing or incorrect API key: send 'Authorization: Bearer "
                                    "<key>'", type="authentication_error", code="invalid_api_key").response()
                _log_request(request, response.status_code, t0)
                return response
        if request.method == "POST":
            refused = _body_refused(request, max_request_bytes)
            if refused is not None:
                _log_request(request, refused.status, t0)
                return refused.response()
        try:
            response = await call_next(request)
        except Exception as e:  # noqa: BLE001 - the request boundary: answer 500, keep serving
            log.exception("%s %s failed", request.method, request.url.path)
            response = APIError(500, f"internal error: {type(e).__name__}: {e}",
                                type="server_error").response()
        _log_request(request, response.status_code, t0)
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        b = state.get("batcher")
        stats = asdict(b.stats) if b else {}
        return {"status": "ok", "model": engine.name, "prompt_style": engine.prompt.style,
                "queued": b.queued if b else 0, **stats,
                "mean_batch": round(b.stats.mean_batch, 2) if b else 0.0}

    def model_object() -> dict[str, Any]:
        return {"id": engine.name, "object": "model", "created": engine.created, "owned_by": "distillery",
                "max_model_len": engine.max_context, "prompt_style": engine.prompt.style}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_object()]}

    @app.get("/v1/models/{model_id:path}")   # :path: a name like models/warmup has slashes
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        if model_id != engine.name:
            raise APIError(404, f"model {model_id!r} is not served here; this server serves "
                           f"{engine.name!r} (see GET /v1/models)", param="model", code="model_not_found")
        return model_object()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request, response: Response) -> Any:
        body.check_supported()
        if body.model != engine.name:
            raise APIError(404, f"model {body.model!r} is not served here; this server serves "
                           f"{engine.name!r} (see GET /v1/models)", param="model", code="model_not_found")
        messages = []
        for m in body.messages:
            d: dict[str, Any] = {"role": m.role, "content": m.text()}
            if m.tool_calls:
                d["tool_calls"] = [c.model_dump() for c in m.tool_calls]
            if m.tool_call_id:
                d["tool_call_id"] = m.tool_call_id
            messages.append(d)
        bad = _not_utf8(messages)
        if bad:
            raise APIError(400, f"{bad} is not valid UTF-8 text (a lone surrogate escape)", param=bad)
        specs = _tool_specs(body.tools or []) if body.tool_choice != "none" else []
        prompt, notes = await asyncio.to_thread(engine.render_noted, messages, body.tools)
        for note in notes:
            kind = note.partition("=")[0]
            if kind not in noted:
                noted.add(kind)
                log.warning("prompt note %s: %s; replies say so in their %s header (logged once)",
                            kind, PROMPT_NOTES[kind], PROMPT_NOTES_HEADER)
        headers = {PROMPT_NOTES_HEADER: ", ".join(notes)} if notes else {}
        temperature = 1.0 if body.temperature is None else body.temperature   # the API's default
        req = GenRequest(
            prompt_ids=prompt,
            max_new_tokens=engine.max_new_tokens(len(prompt), body.max_completion_tokens or body.max_tokens),
            temperature=temperature, top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed if body.seed is not None else secrets.randbits(63), stop=body.stops())
        result = await state["batcher"].submit(req)
        call = _tool_call(result, specs)
        finish = "tool_calls" if call else result.finish_reason
        request.state.summary = (f"prompt={result.prompt_tokens} completion={len(result.token_ids)} "
                                 f"finish={finish} batch={result.batch_size}"
                                 + (f" notes={','.join(notes)}" if notes else ""))
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_stream(engine, result, call, finish, cid, created, include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", **headers})
        response.headers.update(headers)
        message: dict[str, Any] = {"role": "assistant", "content": None if call else result.text}
        if call:
            message["tool_calls"] = [call]
        logprobs = None
        if body.logprobs:
            with engine.tok_lock:
                pieces = [engine.decode([t]) for t in result.token_ids]
            logprobs = {"content": [
                {"token": p, "logprob": lp, "bytes": list(p.encode()), "top_logprobs": []}
                for p, lp in zip(pieces, result.logprobs, strict=True)]}
        return {"id": cid, "object": "chat.completion", "created": created, "model": engine.name,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": message, "logprobs": logprobs,
                             "finish_reason": finish}],
                "usage": _usage(result)}

    return app


def _body_refused(request: Request, limit: int) -> APIError | None:
    """A POST whose body is too large (413) or of unstated length (411), else None; decided
    from the headers, before a byte of the body is read."""
    length = request.headers.get("content-length")
    if length is None:
        return APIError(411, "send the request body with a Content-Length header",
                        code="length_required")
    if not length.isdecimal() or int(length) > limit:
        return APIError(413, f"the request body is {length} bytes; this server accepts at most {limit}",
                        code="request_too_large")
    return None


def _log_request(request: Request, status: int, t0: float) -> None:
    ms = (time.perf_counter() - t0) * 1000
    client = f"{request.client.host}:{request.client.port}" if request.client else "-"
    summary = getattr(request.state, "summary", "")
    log.info("%s %s %s %d %.1fms%s", client, request.method, request.url.path, status, ms,
             f" {summary}" if summary else "")


async def _stream(engine: Engine, r: GenResult, call: dict[str, Any] | None, finish: str,
                  cid: str, created: int, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: a role delta, content (or tool call) deltas, a finish chunk,
    optionally a usage chunk, then [DONE]."""
    def chunk(delta: dict[str, Any], finish_reason: str | None = None,
              choices: bool = True) -> str:
        obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                               "model": engine.name, "system_fingerprint": None,
                               "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish_reason}] if choices else []}
        if include_usage:
            obj["usage"] = None
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": "" if call is None else None})
    if call is not None:
        yield chunk({"tool_calls": [{"index": 0, **call}]})
    else:
        for piece in await asyncio.to_thread(engine.text_deltas, r.text_ids, r.text):
            yield chunk({"content": piece})
    yield chunk({}, finish)
    if include_usage:
        tail = {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": engine.name, "system_fingerprint": None, "choices": [], "usage": _usage(r)}
        yield f"data: {json.dumps(tail)}\n\n"
    yield "data: [DONE]\n\n"


# ---------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------


_BUSY = "is another server running there? choose another --port"
_BIND_ADVICE = {
    errno.EADDRINUSE: _BUSY,
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address: check --host (127.0.0.1 for "
                         "this machine alone, 0.0.0.0 for every interface)",
    errno.EACCES: "a port below 1024 needs privileges: choose another --port",
}


def _bind(host: str, port: int) -> socket.socket:
    """Listen before loading the model, so a busy port fails in a second with a clear message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OverflowError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: a port is 0 to 65535") from e
    except socket.gaierror as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: the host {host!r} could not be resolved "
                         f"({e.strerror or e}); check --host") from e
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}; {_BIND_ADVICE.get(e.errno, _BUSY)}") from e
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(model_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, max_batch: int = 32, batch_wait_ms: float = 5.0,
          model_name: str | None = None, device: str = "auto", log_level: str = "info",
          max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
    """Serve `model_dir` until interrupted (Ctrl-C / SIGTERM shut it down cleanly)."""
    import uvicorn

    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    sock = _bind(host, port)
    try:
        engine = load_engine(model_dir, name=model_name, device=device)
        app = create_app(engine, api_key=api_key, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                         max_request_bytes=max_request_bytes)
        where = f"[{host}]" if ":" in host else host
        log.info("listening on http://%s:%d/v1", where, sock.getsockname()[1])
        server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False))
        server.run(sockets=[sock])
    finally:
        sock.close()


@dataclass
class RunningServer:
    base_url: str            # http://127.0.0.1:PORT/v1
    server: Any              # the uvicorn.Server
    thread: threading.Thread = field(repr=False)


@contextmanager
def serve_in_thread(engine: Engine, *, host: str = "127.0.0.1", port: int = 0,
                    api_key: str | None = None, max_batch: int = 32, batch_wait_ms: float = 5.0,
                    max_request_bytes: int = MAX_REQUEST_BYTES) -> Iterator[RunningServer]:
    """Serve an already-loaded engine from a background thread (tests, notebooks, a stage
    evaluating a model through the API); port 0 picks a free port."""
    import uvicorn

    sock = _bind(host, port)
    app = create_app(engine, api_key=api_key, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                     max_request_bytes=max_request_bytes)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="distillery-serve")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ServeError("the server thread did not start (see the log above)")
            time.sleep(0.01)
        yield RunningServer(f"http://{host}:{sock.getsockname()[1]}/v1", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

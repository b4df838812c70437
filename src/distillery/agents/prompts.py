"""Prompt rendering: the one place a Context becomes model input. Prompts are data.

Two styles share one structure (instruction, injected experience, recent history, current
observation):

- ``compact`` for the small models trained here: marker tokens and raw text, rendered
  straight to token ids under a hard token budget. The instruction is never cut; the
  current observation is kept (its tail trimmed if it alone would overflow); older turns
  are dropped first. Rendering a step with its whole history reproduces exactly the
  prefix of the episode rendered as one sequence, so training can use one sequence per
  episode (`episode_example_ids`) while acting sees the same tokens.
- ``chat`` for instruct checkpoints and OpenAI-compatible endpoints: system/user/assistant
  messages (`render_messages`), token-budgeted through the tokenizer's chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from distillery.config import check_choices
from distillery.envs.base import ToolSpec, env_spec
from distillery.lm.encoding import encode, memo
from distillery.lm.markers import MARKERS
from distillery.types import Context, Turn

# ---------------------------------------------------------------------------------------
# Templates (data)
# ---------------------------------------------------------------------------------------

# `description` is the environment's own (`EnvSpec.description`).
SYSTEM_TEMPLATE = (
    "{description}\n"
    "Reply with exactly one tool call per turn, written as tool(arg=\"value\", ...), and nothing "
    "else. Look things up before acting when you need to. Call finish() when the task is done.\n"
    "Tools:\n{tools}"
)
EXPERIENCE_TEMPLATE = "Lessons from earlier work for this user:\n{items}"
EXPERIENCE_ITEM = "- {text}"
FIRST_USER_TEMPLATE = "Task: {instruction}\n\n{observation}"
TRUNCATED = " …"


@dataclass
class PromptConfig:
    style: Literal["compact", "chat"] = field(default="compact",
                                              metadata={"help": "compact (small models) | chat (instruct checkpoints)"})
    max_prompt_tokens: int = field(default=640, metadata={"help": "hard cap on prompt length in tokens"})
    max_observation_tokens: int = field(default=200, metadata={"help": "cap per past observation"})
    max_experience_tokens: int = field(default=160, metadata={"help": "cap on the injected experience"})
    max_history_turns: int = field(default=8, metadata={"help": "most recent turns kept at most"})

    def __post_init__(self) -> None:
        check_choices(self, "prompt")
        if self.max_prompt_tokens < 32:
            raise ValueError("max_prompt_tokens must be at least 32")


class PromptTooLong(ValueError):
    """The instruction alone does not fit the budget (it is never cut)."""


# ---------------------------------------------------------------------------------------
# Compact style: straight to ids
# ---------------------------------------------------------------------------------------


def _marker(tok: Any, name: str) -> int:
    """The id of marker `name`, memoised on the tokenizer as texts are (a prompt has a few
    markers per turn, and the tokenizer's lookup is several Python calls deep)."""
    cache = memo(tok)
    key = ("marker", name)      # texts are str keys: a tuple cannot collide with one
    tid = cache.get(key)
    if tid is None:
        tid = tok.convert_tokens_to_ids(MARKERS[name])
        if tid is None or tid == tok.unk_token_id:
            raise ValueError(f"tokenizer has no marker token {MARKERS[name]!r}; train it with lm.tokenizer")
        tid = cache[key] = int(tid)
    return tid


def _cap(ids: list[int], n: int) -> list[int]:
    return ids if len(ids) <= n else ids[:n]


def experience_text(items: Sequence[str]) -> str:
    return EXPERIENCE_TEMPLATE.format(items="\n".join(EXPERIENCE_ITEM.format(text=t) for t in items))


# Room the experience always leaves for the current observation and the action marker.
MIN_OBSERVATION_ROOM = 32


def _head(tok: Any, instruction: str, experience: Sequence[str], cfg: PromptConfig) -> list[int]:
    """Instruction (never cut), then the experience cut to what the budget leaves."""
    ids = [_marker(tok, "instruction"), *encode(tok, instruction)]
    if experience:
        room = min(cfg.max_experience_tokens, cfg.max_prompt_tokens - len(ids) - 1 - MIN_OBSERVATION_ROOM)
        if room > 0:
            ids += [_marker(tok, "experience"), *_cap(encode(tok, experience_text(experience)), room)]
    return ids


def _turn_ids(tok: Any, turn: Turn, cfg: PromptConfig) -> list[int]:
    return [_marker(tok, "observation"), *_cap(encode(tok, turn.observation), cfg.max_observation_tokens),
            _marker(tok, "action"), *encode(tok, turn.action), _marker(tok, "end")]


def action_ids(tok: Any, action: str) -> list[int]:
    """The target of one step: the action text and the end marker (where generation stops)."""
    return [*encode(tok, action), _marker(tok, "end")]


@dataclass(frozen=True)
class CompactCuts:
    """What a compact prompt left out of its context (all zero/False: nothing)."""

    experience: bool = False       # the experience block cut to its budget
    observation: bool = False      # the current observation cut to fit max_prompt_tokens
    turns_kept: int = 0            # past turns in the prompt, of len(ctx.history)
    past_observations_cut: int = 0  # kept turns whose observation was cut to max_observation_tokens


def render_compact_ids(ctx: Context, tok: Any, cfg: PromptConfig) -> list[int]:
    """Prompt ids for the next action of `ctx`, never longer than `cfg.max_prompt_tokens`."""
    return _joined(*_compact_parts(ctx, tok, cfg), tok, cfg)


def render_compact(ctx: Context, tok: Any, cfg: PromptConfig) -> tuple[list[int], CompactCuts]:
    """`render_compact_ids`, and what the budgets cut from the context on the way (for a
    server to tell its client; acting needs only the ids)."""
    head, turns, cur = _compact_parts(ctx, tok, cfg)
    kept = ctx.history[len(ctx.history) - len(turns):]
    full_head = 1 + len(encode(tok, ctx.task.instruction)) + (
        1 + len(encode(tok, experience_text(ctx.experience))) if ctx.experience else 0)
    cuts = CompactCuts(
        experience=len(head) < full_head, observation=len(cur) - 1 < len(encode(tok, ctx.observation)),
        turns_kept=len(turns),
        past_observations_cut=sum(len(encode(tok, t.observation)) > cfg.max_observation_tokens for t in kept))
    return _joined(head, turns, cur, tok, cfg), cuts


def _compact_parts(ctx: Context, tok: Any, cfg: PromptConfig) -> tuple[list[int], list[list[int]], list[int]]:
    """The head, the past turns that fit (newest first) and the current observation."""
    head = _head(tok, ctx.task.instruction, ctx.experience, cfg)
    budget = cfg.max_prompt_tokens - len(head) - 2   # the closing action marker, and one token spare
    if budget <= 0:
        raise PromptTooLong(
            f"task {ctx.task.task_id}: instruction and experience take {len(head)} tokens, over the "
            f"budget of {cfg.max_prompt_tokens}; raise prompt.max_prompt_tokens")
    cur = [_marker(tok, "observation"), *encode(tok, ctx.observation)[: max(0, budget - 1)]]
    budget -= len(cur)
    turns: list[list[int]] = []
    for turn in reversed(ctx.history[-cfg.max_history_turns:] if cfg.max_history_turns else []):
        ids = _turn_ids(tok, turn, cfg)
        if len(ids) > budget:
            break
        turns.append(ids)
        budget -= len(ids)
    return head, turns, cur


def _joined(head: list[int], turns: list[list[int]], cur: list[int], tok: Any, cfg: PromptConfig) -> list[int]:
    out = head + [i for t in reversed(turns) for i in t] + cur + [_marker(tok, "action")]
    assert len(out) <= cfg.max_prompt_tokens, "prompt budget arithmetic is off"
    return out


def episode_example_ids(
    instruction: str, turns: Sequence[Turn], tok: Any, cfg: PromptConfig,
    experience: Sequence[str] = (),
) -> tuple[list[int], list[bool]] | None:
    """One sequence for a whole episode, and which tokens are action targets.

    Returns None when the episode does not fit the prompt budget unabridged (the caller then
    falls back to one example per step, rendered exactly as acting renders it).
    """
    ids = _head(tok, instruction, experience, cfg)
    mask = [False] * len(ids)
    for turn in turns:
        obs = [_marker(tok, "observation"), *encode(tok, turn.observation), _marker(tok, "action")]
        ids += obs
        mask += [False] * len(obs)
        act = action_ids(tok, turn.action)
        ids += act
        mask += [True] * len(act)
    # The last step's prompt is the sequence minus its action: it must fit the budget, and
    # every past observation must be uncut for the prefixes to match acting exactly.
    last_prompt = len(ids) - len(action_ids(tok, turns[-1].action)) if turns else len(ids)
    if last_prompt > cfg.max_prompt_tokens or len(turns) > cfg.max_history_turns + 1:
        return None
    if any(len(encode(tok, t.observation)) > cfg.max_observation_tokens for t in turns[:-1]):
        return None
    return ids, mask


# ---------------------------------------------------------------------------------------
# Chat style: messages (for chat templates and OpenAI-compatible endpoints)
# ---------------------------------------------------------------------------------------


def tools_text(specs: Sequence[ToolSpec]) -> str:
    return "\n".join(f"- {s.signature()}: {s.description}" for s in specs)


def render_messages(ctx: Context, specs: Sequence[ToolSpec], *, max_turns: int | None = None,
                    with_tools_text: bool = True) -> list[dict[str, str]]:
    """System + alternating user (observations) / assistant (actions) messages."""
    description = env_spec(ctx.task.env).description
    system = SYSTEM_TEMPLATE.format(description=description, tools=tools_text(specs) if with_tools_text else "")
    if not with_tools_text:
        system = system.split("Tools:")[0].rstrip()
    if ctx.experience:
        system += "\n\n" + experience_text(ctx.experience)
    history = ctx.history if max_turns is None else ctx.history[len(ctx.history) - max_turns:] if max_turns else []
    msgs = [{"role": "system", "content": system}]
    first = True
    for turn in history:
        content = FIRST_USER_TEMPLATE.format(instruction=ctx.task.instruction, observation=turn.observation) \
            if first else turn.observation
        msgs += [{"role": "user", "content": content}, {"role": "assistant", "content": turn.action}]
        first = False
    content = FIRST_USER_TEMPLATE.format(instruction=ctx.task.instruction, observation=ctx.observation) \
        if first else ctx.observation
    msgs.append({"role": "user", "content": content})
    return msgs


def render_chat_ids(ctx: Context, tok: Any, specs: Sequence[ToolSpec], cfg: PromptConfig) -> list[int]:
    """Chat-template ids within the budget: drop the oldest turns first, then trim the
    current observation; the instruction (in the first user message) is always kept."""
    for n in range(min(len(ctx.history), cfg.max_history_turns), -1, -1):
        msgs = render_messages(ctx, specs, max_turns=n)
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
        if len(ids) <= cfg.max_prompt_tokens:
            return ids
    obs_ids = encode(tok, ctx.observation)
    while obs_ids:
        obs_ids = obs_ids[: len(obs_ids) // 2]
        short = Context(ctx.episode_id, ctx.task, ctx.t, tok.decode(obs_ids) + TRUNCATED, [],
                        ctx.experience, ctx.experience_ids, ctx.seed)
        msgs = render_messages(short, specs, max_turns=0)
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
        if len(ids) <= cfg.max_prompt_tokens:
            return ids
    raise PromptTooLong(f"task {ctx.task.task_id}: the system prompt and instruction alone exceed "
                        f"{cfg.max_prompt_tokens} tokens; raise prompt.max_prompt_tokens")


def render_prompt_ids(ctx: Context, tok: Any, specs: Sequence[ToolSpec], cfg: PromptConfig) -> list[int]:
    if cfg.style == "compact":
        return render_compact_ids(ctx, tok, cfg)
    return render_chat_ids(ctx, tok, specs, cfg)

"""A random policy: syntactically valid calls of random tools with arguments drawn from
what the episode has shown so far (words, paths, addresses and ids in the instruction and
observations), so its calls are plausible rather than gibberish. A floor for the benchmark
and a probe for task validation (a task a random policy solves is too easy)."""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence

from distillery.envs.actions import format_call
from distillery.envs.base import ToolSpec, tool_specs
from distillery.types import ActionOutput, Context, ToolCall

_TOKEN = re.compile(r"[A-Za-z0-9][\w.@:/-]*[\w]|[A-Za-z0-9]")
_PATTERNS = {
    "path": re.compile(r"^[\w.-]+(/[\w.-]+)+$|^[\w-]+\.[a-z]{2,4}$"),
    "folder": re.compile(r"^[\w-]+(/[\w-]+)*/?$"),
    "email": re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$"),
    "mail_id": re.compile(r"^m\d+$"),
    "date": re.compile(r"^\d{4}-\d{2}-\d{2}$"),
    "time": re.compile(r"^\d{1,2}:\d{2}$"),
}


def _candidates(ctx: Context) -> list[str]:
    text = " ".join([ctx.task.instruction, ctx.observation] + [t.observation for t in ctx.history])
    return _TOKEN.findall(text)


def _sample_value(kind: str, typ: str, words: list[str], rng: random.Random) -> str | int:
    if typ == "integer":
        return rng.choice([15, 30, 45, 60, 90])
    pat = _PATTERNS.get(kind)
    pool = [w for w in words if pat.match(w)] if pat else []
    if not pool:
        pool = words or ["x"]
    if kind in ("text", "name") and len(pool) > 1 and rng.random() < 0.5:
        return " ".join(rng.sample(pool, k=min(len(pool), rng.randint(2, 5))))
    return rng.choice(pool)


class RandomPolicy:
    name = "random"
    model = "-"

    def __init__(self, seed: int = 0, finish_prob: float = 0.05) -> None:
        self.seed = seed
        self.finish_prob = finish_prob

    @staticmethod
    @functools.cache
    def _specs(env: str) -> list[ToolSpec]:
        """The environment's tools but finish (which `finish_prob` decides)."""
        return [s for s in tool_specs(env) if s.name != "finish"]

    def act(self, contexts: Sequence[Context]) -> list[ActionOutput]:
        out = []
        for ctx in contexts:
            # One generator per (episode, step): the same seed gives the same episode no
            # matter how episodes are batched or sharded.
            rng = random.Random(f"{self.seed}:{ctx.seed}:{ctx.episode_id}:{ctx.t}")
            if rng.random() < self.finish_prob:
                out.append(ActionOutput(text=format_call(ToolCall("finish", {}))))
                continue
            spec = rng.choice(self._specs(ctx.task.env))
            words = _candidates(ctx)
            args = {
                p.name: _sample_value(p.kind, p.type, words, rng)
                for p in spec.params
                if p.required or rng.random() < 0.3
            }
            out.append(ActionOutput(text=format_call(ToolCall(spec.name, args))))
        return out

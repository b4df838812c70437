"""From trajectories to training text: the tokenizer's corpus and supervised examples.

A training sequence is a whole episode rendered exactly as acting renders it (instruction,
then observation/action turns), with loss on the action tokens only — one sequence per
episode instead of one per step, so a T-step episode costs one forward pass, not T.
An episode too long for the prompt budget falls back to one example per step, each the
exact prompt the policy would see at that step followed by its action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from distillery.agents.prompts import (
    PromptConfig,
    action_ids,
    episode_example_ids,
    render_compact_ids,
    tools_text,
)
from distillery.envs.base import env_spec
from distillery.train.data import Example, example_from_mask
from distillery.types import Context, Task, Turn


def episode_turns(steps: pl.DataFrame) -> dict[str, list[Turn]]:
    """Each episode's turns (observation before the action, and the action), in order."""
    out: dict[str, list[Turn]] = {}
    for row in steps.sort(["episode_id", "t"]).select("episode_id", "observation", "action_text").iter_rows():
        out.setdefault(row[0], []).append(Turn(observation=row[1], action=row[2]))
    return out


def corpus_texts(tasks: Iterable[Task], steps: pl.DataFrame | None = None) -> list[str]:
    """Everything a model will read or write: each environment's tool descriptions and
    vocabulary, then per task its instruction, preferences and initial state text, then
    the observations, feedback and actions of `steps`."""
    tasks = list(tasks)
    texts: list[str] = []
    for env in dict.fromkeys(t.env for t in tasks):
        spec = env_spec(env)
        texts += [tools_text(spec.tools), spec.vocabulary()]
    for t in tasks:
        texts.append(t.instruction)
        texts.extend(t.preferences)
        texts.extend(env_spec(t.env).state_texts(t.initial_state))
    if steps is not None:
        texts.extend(steps["observation"].to_list())
        texts.extend(steps["feedback"].to_list())
        texts.extend(steps["action_text"].to_list())
    return texts


@dataclass
class ExampleStats:
    episodes: int
    whole_episode: int
    per_step_fallback: int
    skipped_unsuccessful: int
    examples: int
    tokens: int
    target_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sft_examples(
    tasks: Mapping[str, Task],
    episodes: pl.DataFrame,
    steps: pl.DataFrame,
    tok: Any,
    prompt: PromptConfig,
    only_success: bool = True,
    experience: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[Example], ExampleStats]:
    """Supervised examples from trajectories (behaviour cloning of the episodes' actions).

    `experience` optionally maps an episode id to the texts to render in its prompt (the
    internalization stage trains with and without them).
    """
    turns = episode_turns(steps)
    examples: list[Example] = []
    whole = fallback = skipped = 0
    for ep in episodes.sort("episode_id").iter_rows(named=True):
        if only_success and not ep["success"]:
            skipped += 1
            continue
        task = tasks[ep["task_id"]]
        ts = turns.get(ep["episode_id"], [])
        if not ts:
            continue
        exp = list((experience or {}).get(ep["episode_id"], []))
        pair = episode_example_ids(task.instruction, ts, tok, prompt, experience=exp)
        if pair is not None:
            examples.append(example_from_mask(*pair))
            whole += 1
            continue
        fallback += 1
        for t, turn in enumerate(ts):
            ctx = Context(episode_id=ep["episode_id"], task=task, t=t, observation=turn.observation,
                          history=ts[:t], experience=exp)
            p = render_compact_ids(ctx, tok, prompt)
            a = action_ids(tok, turn.action)
            examples.append(example_from_mask(p + a, [False] * len(p) + [True] * len(a)))
    stats = ExampleStats(
        episodes=episodes.height, whole_episode=whole, per_step_fallback=fallback,
        skipped_unsuccessful=skipped, examples=len(examples),
        tokens=sum(len(e) for e in examples), target_tokens=sum(e.n_labels for e in examples),
    )
    return examples, stats

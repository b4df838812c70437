"""Evidence for summarisers: trajectories grouped by task, each episode with its decisive calls.

A decisive call is a valid, error-free call of a mutating tool, kept with what the agent had
seen by then (the instruction and every observation so far). A group holds the K episodes of
one task, split into successes and failures, so a failure can be contrasted with a success
of the same task. `call_text` writes a call as the agent would, for prompts and records.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from distillery.envs.actions import format_call
from distillery.envs.base import tool_specs
from distillery.types import Task, ToolCall


@dataclass(frozen=True)
class Call:
    """One decisive (valid, mutating, error-free) call and what the agent had seen by then."""

    tool: str
    args: dict[str, Any]
    t: int
    seen: str      # the instruction and every observation up to this step, lower-cased


@dataclass
class EpisodeEvidence:
    episode_id: str
    success: bool
    failed_checks: list[str]
    calls: list[Call]


@dataclass
class GroupEvidence:
    """The K episodes of one task (one rollout group)."""

    group: str
    task: Task
    successes: list[EpisodeEvidence] = field(default_factory=list)
    failures: list[EpisodeEvidence] = field(default_factory=list)

    @property
    def has_contrast(self) -> bool:
        return bool(self.successes and self.failures)


@dataclass
class Evidence:
    """Every task group of some trajectories, all of one environment (`env`, whose tools and
    phrasebook apply)."""

    groups: list[GroupEvidence]
    messages: list[str] = field(default_factory=list)
    env: str = "stage"

    @property
    def n_successes(self) -> int:
        return sum(len(g.successes) for g in self.groups)

    @property
    def n_failures(self) -> int:
        return sum(len(g.failures) for g in self.groups)


def _examples(names: Sequence[str], n: int = 3) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def build_evidence(tasks: Mapping[str, Task], episodes: pl.DataFrame, steps: pl.DataFrame) -> Evidence:
    """Group episodes by task group and keep each one's decisive calls. Episodes of tasks
    missing from `tasks` are left out with a message; so is every group with nothing to
    contrast, with a message saying so."""
    messages: list[str] = []
    if episodes.height == 0:
        return Evidence([], ["no episodes"])
    env = str(episodes["env"][0]) if "env" in episodes.columns else "stage"
    mutating = {s.name for s in tool_specs(env) if s.mutates}
    by_episode: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if steps.height:
        cols = [c for c in ("episode_id", "t", "observation", "tool", "args_json", "valid", "error", "feedback")
                if c in steps.columns]
        for row in steps.select(cols).sort(["episode_id", "t"]).iter_rows(named=True):
            by_episode[row["episode_id"]].append(row)
    groups: dict[str, GroupEvidence] = {}
    missing: list[str] = []
    group_col = "group" if "group" in episodes.columns else "task_id"
    for ep in episodes.sort("episode_id").iter_rows(named=True):
        task = tasks.get(ep["task_id"])
        if task is None:
            missing.append(ep["task_id"])
            continue
        seen = [task.instruction.lower()]
        calls = []
        for st in by_episode.get(ep["episode_id"], []):
            seen.append(str(st.get("observation") or "").lower())
            if st.get("tool") not in mutating or not st.get("valid", True) or st.get("error"):
                continue
            try:
                args = json.loads(st.get("args_json") or "{}")
            except json.JSONDecodeError:
                continue
            if isinstance(args, dict):
                calls.append(Call(st["tool"], args, int(st["t"]), "\n".join(seen)))
        g = groups.setdefault(ep[group_col], GroupEvidence(ep[group_col], task))
        rec = EpisodeEvidence(ep["episode_id"], bool(ep["success"]), list(ep.get("failed_checks") or []), calls)
        (g.successes if rec.success else g.failures).append(rec)
    if missing:
        u = sorted(set(missing))
        messages.append(f"{len(missing)} episode(s) of {len(u)} unknown task(s) left out: {_examples(u)}")
    profiles = sorted({g.task.profile for g in groups.values()})
    if len(profiles) > 1:
        messages.append(f"episodes of {len(profiles)} users are mixed ({_examples(profiles)}): preferences differ "
                        "per user, so only what they share can be found; give each user's pool that user's episodes")
    only_s = [g.group for g in groups.values() if g.successes and not g.failures]
    only_f = [g.group for g in groups.values() if g.failures and not g.successes]
    if only_s:
        messages.append(f"{len(only_s)} task group(s) have only successes, no failure to contrast "
                        f"(used for cross-task regularities only): {_examples(only_s)}")
    if only_f:
        messages.append(f"{len(only_f)} task group(s) have only failures: only what their failed checks "
                        f"state can be learned from them: {_examples(only_f)}")
    return Evidence(list(groups.values()), messages, env)


MAX_ARG_CHARS = 120     # long argument values (mail bodies) are cut: a prompt needs their start


def call_text(tool: str, args: Mapping[str, Any], max_chars: int = MAX_ARG_CHARS, env: str = "stage") -> str:
    """A call as the agent writes it: arguments in the tool's parameter order (trajectories
    store them sorted), string values longer than `max_chars` cut with an ellipsis."""
    spec = next((s for s in tool_specs(env) if s.name == tool), None)
    order = [p.name for p in spec.params] if spec else []
    keys = [k for k in order if k in args] + sorted(k for k in args if k not in order)
    short = {k: (args[k][:max_chars].rstrip() + "…" if isinstance(args[k], str) and len(args[k]) > max_chars
                 else args[k]) for k in keys}
    return format_call(ToolCall(tool, short))

"""Instance-level experience (reference/algorithms.md 5a): what worked on one task, as a
short record.

Each successful episode becomes one record: its decisive steps (the valid, error-free
calls of mutating tools; look-ups and `finish` are left out) written as one line of calls,
with the task's instruction as the condition it applies to. Episodes that did the same
thing on the same task fold into one record whose provenance lists them all and whose
counter counts them. Ids are hashes of the content, so mining the same trajectories twice
gives the same records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import polars as pl

from distillery.envs.base import tool_specs
from distillery.mining.evidence import call_text
from distillery.types import Experience, Task, ToolCall

INSTANCE_TEMPLATE = "Solved by: {calls}."
CALL_SEPARATOR = "; then "
MAX_ARG_CHARS = 60      # long bodies are cut: the record is a reminder, not a transcript


def instance_id(family: str, condition: str, text: str) -> str:
    h = hashlib.sha1(f"{family}\x1f{condition}\x1f{text}".encode()).hexdigest()
    return f"i-{h[:12]}"


def instance_text(calls: list[ToolCall], env: str = "stage") -> str:
    """The record's text: the decisive calls in order, long argument values cut."""
    parts = [call_text(c.tool, c.args, MAX_ARG_CHARS, env) for c in calls]
    return INSTANCE_TEMPLATE.format(calls=CALL_SEPARATOR.join(parts))


def mine_instances(
    tasks: Mapping[str, Task],
    episodes: pl.DataFrame,
    steps: pl.DataFrame,
    *,
    max_per_family: int = 20,
) -> list[Experience]:
    """One active `instance` record per distinct successful solution, at most
    `max_per_family` per family (the best supported first, then the shortest), sorted by
    family. Episodes of tasks missing from `tasks` are skipped (their condition is unknown)."""
    if max_per_family < 1:
        raise ValueError(f"max_per_family must be >= 1, not {max_per_family}")
    wins = episodes.filter(pl.col("success")) if episodes.height else episodes
    if wins.height == 0:
        return []
    env = str(wins["env"][0]) if "env" in wins.columns else "stage"
    mutating = {s.name for s in tool_specs(env) if s.mutates}
    ids = set(wins["episode_id"].to_list())
    decisive: dict[str, list[ToolCall]] = {}
    if steps.height:
        rows = (steps.filter(pl.col("episode_id").is_in(list(ids)) & pl.col("tool").is_in(list(mutating))
                             & pl.col("valid") & (pl.col("error").fill_null("") == ""))
                .sort(["episode_id", "t"]).select("episode_id", "tool", "args_json"))
        for ep_id, tool, args_json in rows.iter_rows():
            try:
                args = json.loads(args_json or "{}")
            except json.JSONDecodeError:
                continue
            decisive.setdefault(ep_id, []).append(ToolCall(tool, args if isinstance(args, dict) else {}))
    records: dict[str, Experience] = {}
    for ep_id, task_id in wins.sort("episode_id").select("episode_id", "task_id").iter_rows():
        task = tasks.get(task_id)
        calls = decisive.get(ep_id)
        if task is None or not calls:
            continue
        text = instance_text(calls, env)
        key = instance_id(task.family, task.instruction, text)
        rec = records.get(key)
        if rec is None:
            records[key] = Experience(exp_id=key, kind="instance", text=text, condition=task.instruction,
                                      family=task.family, provenance=[ep_id], counter=1, status="active")
        else:
            rec.provenance.append(ep_id)
            rec.counter += 1
    by_family: dict[str, list[Experience]] = {}
    for rec in records.values():
        by_family.setdefault(rec.family, []).append(rec)
    out: list[Experience] = []
    for fam in sorted(by_family):
        ranked = sorted(by_family[fam], key=lambda e: (-e.counter, len(e.text), e.exp_id))
        out += ranked[:max_per_family]
    return out

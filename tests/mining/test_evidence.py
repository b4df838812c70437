"""Evidence from real STAGE trajectories: episodes grouped by task, each with its decisive
calls and what the agent had seen by then; and calls written as the agent writes them."""

from __future__ import annotations

import polars as pl
from tests.mining.conftest import blind, habit_run, make_tasks

from distillery.envs.base import tool_specs
from distillery.mining.evidence import build_evidence, call_text
from distillery.types import episodes_to_frame, steps_to_frame


def test_episodes_are_grouped_by_task_with_their_decisive_calls():
    tasks = make_tasks("alex", 2, families=["sort_newsletters", "file_invoice"])
    traj = habit_run(tasks, lambda ep: ep.endswith(":k1"), k=2)
    evidence = build_evidence(blind(tasks), traj.episodes, traj.steps)
    assert evidence.env == "stage" and evidence.messages == []
    assert sorted(g.task.task_id for g in evidence.groups) == sorted(t.task_id for t in tasks)
    assert all(g.has_contrast for g in evidence.groups)
    assert (evidence.n_successes, evidence.n_failures) == (4, 4)
    mutating = {s.name for s in tool_specs("stage") if s.mutates}
    for g in evidence.groups:
        [win], [loss] = g.successes, g.failures
        assert win.episode_id.endswith(":k0") and loss.episode_id.endswith(":k1")
        assert loss.failed_checks and not win.failed_checks
        # Only the calls that changed something, in order, each with everything seen so far.
        assert win.calls and all(c.tool in mutating for c in win.calls)
        assert [c.t for c in win.calls] == sorted(c.t for c in win.calls)
        assert all(c.seen.startswith(g.task.instruction.lower()) for c in win.calls)
        assert [c.tool for c in win.calls] == [c.tool for c in loss.calls]


def test_what_cannot_be_contrasted_or_placed_is_named():
    tasks = make_tasks("alex", 2, families=["file_invoice"])
    traj = habit_run(tasks, lambda ep: ep.startswith(tasks[0].task_id), k=1)
    evidence = build_evidence(blind(tasks), traj.episodes, traj.steps)
    assert any("1 task group(s) have only failures" in m for m in evidence.messages)
    assert any("1 task group(s) have only successes" in m for m in evidence.messages)
    unknown = build_evidence({}, traj.episodes, traj.steps)
    assert unknown.groups == [] and any("2 episode(s) of 2 unknown task(s)" in m for m in unknown.messages)
    empty = build_evidence({}, episodes_to_frame([]), steps_to_frame([]))
    assert empty.groups == [] and empty.messages == ["no episodes"]
    assert traj.episodes.filter(pl.col("success")).height == 1


def test_call_text_orders_arguments_as_the_tool_does_and_cuts_long_values():
    args = {"body": "x" * 10, "subject": "Hi", "to": "a@b.c", "zzz": 1}      # stored sorted
    assert call_text("send_mail", args) == 'send_mail(to="a@b.c", subject="Hi", body="xxxxxxxxxx", zzz=1)'
    assert call_text("send_mail", args, max_chars=5) == 'send_mail(to="a@b.c", subject="Hi", body="xxxxx…", zzz=1)'
    assert call_text("no_such_tool", {"b": 1, "a": 2}) == "no_such_tool(a=2, b=1)"

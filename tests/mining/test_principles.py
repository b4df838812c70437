"""Updating the principle pool: every way an update can have nothing to say (the old pool
comes back), and the LLM summariser against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import logging
from dataclasses import replace

import polars as pl
from tests.json_server import closed_port_url
from tests.mining.conftest import (
    blind,
    chat_reply,
    habit_run,
    make_tasks,
    oracle_run,
    rule,
)

from distillery.mining.evidence import build_evidence
from distillery.mining.principles import LLMSummariser, update_pool
from distillery.mining.rules import RulesSummariser
from distillery.types import Experience, episodes_to_frame, steps_to_frame


def state(pool: list[Experience]) -> list[tuple[str, int]]:
    return [(e.text, e.counter) for e in pool]


# ---------------------------------------------------------------------------------------
# Nothing to learn: the old pool comes back, with a reason
# ---------------------------------------------------------------------------------------

OLD = [rule("In file invoice tasks, files are moved into finance/invoices/.", 3, family="file_invoice",
            condition="move.dst dir"), rule("Check the calendar before booking.", 2)]


def test_only_failures_keep_the_pool():
    tasks = make_tasks("alex", 2, families=["file_invoice"])
    traj = habit_run(tasks, lambda ep: True, k=2)
    assert not traj.episodes["success"].any()
    up = update_pool(OLD, blind(tasks), traj.episodes, traj.steps, RulesSummariser())
    assert up.pool == OLD and up.pool is not OLD and not up.changed
    assert any("only failures" in m for m in up.messages)
    assert any("no successful episode" in m and "pool unchanged" in m for m in up.messages)


def test_one_group_of_only_successes_keeps_the_pool():
    tasks = make_tasks("alex", 1, families=["file_invoice"])
    traj = oracle_run(tasks, k=2)
    up = update_pool(OLD, blind(tasks), traj.episodes, traj.steps, RulesSummariser())
    assert up.pool == OLD and up.ops == []
    assert any("only successes" in m for m in up.messages)
    assert any("proposed no change" in m for m in up.messages)


def test_no_episodes_and_an_empty_pool():
    up = update_pool([], {}, episodes_to_frame([]), steps_to_frame([]), RulesSummariser())
    assert up.pool == [] and up.ops == [] and any("no episodes" in m for m in up.messages)
    up = update_pool(OLD, {}, episodes_to_frame([]), steps_to_frame([]), RulesSummariser())
    assert up.pool == OLD


def test_episodes_of_unknown_tasks_are_named(alex):
    _, traj = alex
    up = update_pool(OLD, {}, traj.episodes, traj.steps, RulesSummariser())
    assert up.pool == OLD and any("unknown task" in m for m in up.messages)


# ---------------------------------------------------------------------------------------
# The LLM summariser against real HTTP servers
# ---------------------------------------------------------------------------------------


def test_llm_summariser_turns_the_reply_into_ops(alex, chat_server, caplog):
    tasks, traj = alex
    url, seen = chat_server(lambda body: chat_reply(
        "ADD: Invoices are filed in paperwork/bills/.\nAGREE 2\nHere are my thoughts.\nEDIT 7: nothing there"))
    summariser = LLMSummariser.from_url(url, "m", max_retries=0)
    with caplog.at_level(logging.WARNING):
        up = update_pool(OLD, tasks, traj.episodes, traj.steps, summariser)
    assert state(up.pool) == [(OLD[0].text, 3), (OLD[1].text, 3), ("Invoices are filed in paperwork/bills/.", 2)]
    assert any("ignored reply line" in m and "thoughts" in m for m in up.messages)
    assert any("EDIT 7" in r.message for r in caplog.records)
    prompt = seen[0]["messages"][1]["content"]
    assert f"1. {OLD[0].text}" in prompt and "2. Check the calendar" in prompt
    assert 'move(src="downloads/' in prompt and "Successful attempt" in prompt and "Failed attempt" not in prompt


def test_llm_summariser_endpoint_down_keeps_the_pool(alex, chat_server):
    tasks, traj = alex
    url = closed_port_url()
    up = update_pool(OLD, tasks, traj.episodes, traj.steps, LLMSummariser.from_url(url, "m", max_retries=0))
    assert up.pool == OLD and up.ops == []
    assert any("unavailable" in m and "cannot connect" in m and url in m for m in up.messages)
    url, seen = chat_server(lambda body: (500, {"error": {"message": "boom"}}))
    up = update_pool(OLD, tasks, traj.episodes, traj.steps, LLMSummariser.from_url(url, "m", max_retries=1))
    assert up.pool == OLD and len(seen) == 2                          # the client retried once
    assert any("HTTP 500" in m and "pool unchanged" in m for m in up.messages)


def test_llm_summariser_shows_a_failure_with_its_failed_checks_types():
    tasks = make_tasks("alex", 1, families=["sort_newsletters"])
    traj = habit_run(tasks, lambda ep: ep.endswith(":k1"), k=2)
    evidence = build_evidence(blind(tasks), traj.episodes, traj.steps)
    [failed] = traj.episodes.filter(~pl.col("success"))["failed_checks"].to_list()
    assert any(c.startswith("mail_in_folder(") and "newsletters" in c for c in failed)
    summariser = LLMSummariser.from_url(closed_port_url(), "m")
    prompt = summariser.messages([], evidence)[1]["content"]
    assert "Failed attempt (failed checks: mail_in_folder" in prompt
    assert "folder=newsletters" not in prompt              # the type only: not the value it wanted
    detailed = replace(summariser, check_details=True).messages([], evidence)[1]["content"]
    assert "folder=newsletters" in detailed
    assert 'move_mail(mail_id="' in prompt and 'folder="reading")' in prompt

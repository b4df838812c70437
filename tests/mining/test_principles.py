"""The ExpeL principle pool: counters worked out by hand, the offline summariser on real
STAGE trajectories of a held-out profile, the LLM summariser against real HTTP servers on
127.0.0.1, and every way an update can have nothing to say (the old pool comes back)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import polars as pl
import pytest
from tests.mining.conftest import chat_reply, closed_port_url

from distillery.agents.base import PolicySpec, make_policy
from distillery.config import TasksConfig
from distillery.envs.actions import format_call
from distillery.envs.base import tool_specs
from distillery.envs.stage.families import COMPANIES
from distillery.mining.principles import (
    Call,
    EpisodeEvidence,
    LLMSummariser,
    PrincipleOp,
    RulesSummariser,
    apply_ops,
    corrected_calls,
    parse_check_name,
    parse_ops,
    principle_id,
    template,
    update_pool,
)
from distillery.mining.store import read_pool, write_pool
from distillery.rollout import RolloutConfig, Trajectories, make_jobs, run_batch
from distillery.tasks.generate import generate_tasks
from distillery.types import ActionOutput, Experience, Task, episodes_to_frame, steps_to_frame


def rule(text: str, counter: int = 2, **kw: Any) -> Experience:
    return Experience(exp_id=principle_id(text, kw.get("family", ""), kw.get("condition", "")), kind="principle",
                      text=text, counter=counter, status="active", **kw)


def state(pool: list[Experience]) -> list[tuple[str, int]]:
    return [(e.text, e.counter) for e in pool]


# ---------------------------------------------------------------------------------------
# apply_ops: ExpeL's counters, by hand
# ---------------------------------------------------------------------------------------


def test_each_op_moves_the_counter_as_expel_does():
    pool = [rule("A", 3), rule("B", 1), rule("C", 2)]
    ops = [PrincipleOp("ADD", text="D"), PrincipleOp("EDIT", 0, text="A2"),
           PrincipleOp("AGREE", 2), PrincipleOp("REMOVE", 1)]
    new = apply_ops(pool, ops)
    # REMOVE B: 1 -> 0, dropped. AGREE C: 2 -> 3. EDIT A: 3 -> 4, new text. ADD D at 2.
    assert state(new) == [("A2", 4), ("C", 3), ("D", 2)]
    assert new[0].exp_id == principle_id("A2") != pool[0].exp_id
    assert new[2].status == "active" and new[2].kind == "principle"


def test_ops_apply_in_the_order_remove_agree_edit_add():
    pool = [rule("A", 1)]
    # Given AGREE first, A would reach 2 and survive the REMOVE; REMOVE goes first and drops it.
    assert apply_ops(pool, [PrincipleOp("AGREE", 0), PrincipleOp("REMOVE", 0)]) == []
    # A dropped rule takes no later op, and ADD comes after EDIT: the EDIT's text is not a duplicate.
    pool = [rule("A", 2), rule("B", 1)]
    new = apply_ops(pool, [PrincipleOp("ADD", text="B2"), PrincipleOp("EDIT", 1, text="B2"),
                           PrincipleOp("REMOVE", 1), PrincipleOp("EDIT", 0, text="A2")])
    assert state(new) == [("A2", 3), ("B2", 2)]


def test_remove_costs_three_when_the_list_is_full():
    def pool_of(n: int) -> list[Experience]:
        return [rule("top", 10)] + [rule(f"r{i}", 5) for i in range(n - 1)]

    full = apply_ops(pool_of(25), [PrincipleOp("REMOVE", 0)], max_rules=20)    # 25 >= 20 + 5
    assert full[0].text == "top" and full[0].counter == 7
    not_full = apply_ops(pool_of(24), [PrincipleOp("REMOVE", 0)], max_rules=20)
    assert not_full[0].text == "top" and not_full[0].counter == 9
    assert len(full) == len(not_full) == 20


def test_sorted_by_counter_stably_and_capped_to_the_highest():
    pool = [rule(f"r{i}", 2 if i % 2 else 1) for i in range(22)]
    new = apply_ops(pool, [], max_rules=20)
    assert [e.text for e in new] == [f"r{i}" for i in range(1, 22, 2)] + [f"r{i}" for i in range(0, 18, 2)]


def test_apply_ops_is_pure_and_skips_duplicates_and_bad_indices():
    pool = [rule("A", 2, provenance=["e1"]), rule("B", 2)]
    before = copy.deepcopy(pool)
    new = apply_ops(pool, [PrincipleOp("AGREE", 0, provenance=("e2",)), PrincipleOp("ADD", text="  a "),
                           PrincipleOp("REMOVE", 7), PrincipleOp("EDIT", 1, text="B2")])
    assert pool == before                                  # nothing mutated
    assert state(new) == [("A", 3), ("B2", 3)]             # duplicate ADD and REMOVE 8 ignored
    assert new[0].provenance == ["e1", "e2"] and pool[0].provenance == ["e1"]
    with pytest.raises(ValueError):
        PrincipleOp("EDIT", 0)
    with pytest.raises(ValueError):
        PrincipleOp("SWAP", 0)


def test_parse_ops_reads_one_op_per_line_and_says_why_it_skips(caplog):
    reply = ("ADD: Invoices go in paperwork/bills/.\n- EDIT 2: Mails end with 'Cheers, Alex'.\n"
             "AGREE 1\n**REMOVE 3**\nREMOVE 9\nEDIT 1:\nsome chatter\nAGREE\n")
    with caplog.at_level(logging.WARNING):
        ops, ignored = parse_ops(reply, n_rules=3)
    assert [o.render() for o in ops] == ["ADD: Invoices go in paperwork/bills/.",
                                          "EDIT 2: Mails end with 'Cheers, Alex'.", "AGREE 1", "REMOVE 3"]
    assert ops[1].index == 1
    assert len(ignored) == 4 and any("REMOVE 9" in w for w in ignored)
    assert sum("ignored" in r.message for r in caplog.records) == 4


def test_template_keeps_constants_and_slots_what_varies():
    assert template(["invoice-acme-12.pdf", "invoice-hooli-7.pdf"], ["", ""]) == ("invoice-<name>-<number>.pdf", 10)
    tmpl, _ = template(["call-with-ann.txt", "budget-ideas.txt"],
                       ["Make a note called 'call with Ann': x", "Write down a note titled 'budget ideas': y"])
    assert tmpl == "<title-in-kebab-case>.txt"


# ---------------------------------------------------------------------------------------
# Real trajectories of the held-out profile
# ---------------------------------------------------------------------------------------

# A user of the default profile who has not learnt alex's ways: the reference solution with
# the default profile's habits in place of alex's preferences.
HABITS = [("paperwork/bills", "finance/invoices"), ("Cheers, Alex", "Best, Sam"),
          ("inbox-files", "documents/attachments"), ('"newsletters"', '"reading"'), ("duration=45", "duration=30")]


class HabitPolicy:
    """Replays the reference solution; on the samples `habit(episode_id)` picks, with the
    default profile's habits, so those episodes fail the checks."""

    name = "habit"
    model = "-"

    def __init__(self, habit: Callable[[str], bool]) -> None:
        self.habit = habit

    def act(self, contexts):
        out = []
        for ctx in contexts:
            ref = ctx.task.reference_solution
            text = format_call(ref[ctx.t]) if ctx.t < len(ref) else "finish()"
            if self.habit(ctx.episode_id):
                for mine, theirs in HABITS:
                    text = text.replace(mine, theirs)
            out.append(ActionOutput(text=text))
        return out


def make_tasks(profile: str, n: int, families: list[str] | None = None) -> list[Task]:
    cfg = TasksConfig(n_train_per_family=n, n_test_per_family=0, random_probes=0, train_profiles=[profile],
                      families=families or [])
    return generate_tasks(cfg, progress=False).tasks


def oracle_run(tasks: list[Task], k: int = 1) -> Trajectories:
    cfg = RolloutConfig(k=k)
    return run_batch(make_policy(PolicySpec(kind="oracle")), make_jobs(tasks, "oracle", cfg), cfg)


def blind(tasks: list[Task]) -> dict[str, Task]:
    """The tasks as the summariser may see them: no preferences, no checks, no reference
    solution (the trajectories were already run with them)."""
    return {t.task_id: replace(t, preferences=[], checks=[], reference_solution=[]) for t in tasks}


@pytest.fixture(scope="module")
def alex() -> tuple[dict[str, Task], Trajectories]:
    tasks = make_tasks("alex", 4)
    traj = oracle_run(tasks)
    assert traj.episodes["success"].all()
    return blind(tasks), traj


@pytest.fixture(scope="module")
def default_run() -> tuple[dict[str, Task], Trajectories]:
    tasks = make_tasks("default", 4)
    return blind(tasks), oracle_run(tasks)


@pytest.fixture(scope="module")
def default_pool(default_run) -> list[Experience]:
    tasks, traj = default_run
    return update_pool([], tasks, traj.episodes, traj.steps, RulesSummariser()).pool


def _by_family(pool: list[Experience]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in pool:
        out.setdefault(e.family, []).append(e.text)
    return out


def test_rules_summariser_recovers_alex_preferences_from_trajectories_alone(alex):
    tasks, traj = alex
    up = update_pool([], tasks, traj.episodes, traj.steps, RulesSummariser())
    fam = _by_family(up.pool)
    assert {o.op for o in up.ops} == {"ADD"} and all(e.counter == 2 for e in up.pool)
    assert any("paperwork/bills/" in t for t in fam["file_invoice"])
    assert "Every mail ends with the sign-off 'Cheers, Alex'." in fam[""]          # one rule, 3 families
    assert any("inbox-files/" in t for t in fam["save_attachment"])
    assert any("'newsletters'" in t for t in fam["sort_newsletters"])
    assert any("45 minutes" in t for t in fam["schedule_meeting"])
    assert any("journal/<title-in-kebab-case>.txt" in t for t in fam["save_note"])
    [temp] = fam["cleanup_temp"]
    assert ".tmp" in temp and ".bak" in temp and ".part" not in temp
    assert any("no company" in t for t in fam["add_contact_card"])
    # Values that vary across tasks are slots, never stated.
    text = " ".join(e.text for e in up.pool).lower()
    assert not any(c in text for c in COMPANIES) and "@" not in text
    # Every rule traces back to episodes; the same evidence gives the same pool.
    assert all(e.provenance and set(e.provenance) <= set(traj.episodes["episode_id"]) for e in up.pool)
    again = update_pool([], tasks, traj.episodes, traj.steps, RulesSummariser())
    assert again.pool == up.pool


def test_a_default_pool_is_edited_towards_alex(alex, default_pool):
    tasks, traj = alex
    assert any("finance/invoices/" in e.text for e in default_pool)
    stale = rule("In schedule meeting tasks, meetings start at 09:00.", 2, family="schedule_meeting",
                 condition="create_event.start value")
    pool = default_pool + [stale]
    up = update_pool(pool, tasks, traj.episodes, traj.steps, RulesSummariser())
    ops = {o.op for o in up.ops}
    assert {"EDIT", "AGREE", "REMOVE"} <= ops
    texts = [e.text for e in up.pool]
    assert any("paperwork/bills/" in t for t in texts) and not any("finance/invoices" in t for t in texts)
    assert "Every mail ends with the sign-off 'Cheers, Alex'." in texts
    assert not any("Best, Sam" in t for t in texts)
    edited = next(e for e in up.pool if "paperwork/bills/" in e.text)
    assert edited.counter == 3                                       # EDIT: +1
    [removed] = [o for o in up.ops if o.op == "REMOVE"]
    assert pool[removed.index] is stale                              # start times vary: contradicted
    assert next(e for e in up.pool if e.text == stale.text).counter == 1
    assert [e.text for e in pool] == [e.text for e in default_pool] + [stale.text]   # input untouched


def test_two_users_mixed_state_only_what_they_share(alex, default_run):
    (alex_tasks, a), (default_tasks, d) = alex, default_run
    up = update_pool([], {**alex_tasks, **default_tasks}, pl.concat([a.episodes, d.episodes]),
                     pl.concat([a.steps, d.steps]), RulesSummariser())
    texts = " ".join(e.text for e in up.pool)
    assert "paperwork/bills" not in texts and "finance/invoices" not in texts and "sign-off" not in texts
    assert "'<name> meeting'" in texts                                 # both users name meetings alike
    assert any("2 users are mixed" in m for m in up.messages)


def test_a_contrasting_failure_in_the_same_group_is_evidence(tmp_path):
    tasks = make_tasks("alex", 2, families=["file_invoice", "email_contact"])
    cfg = RolloutConfig(k=2)
    traj = run_batch(HabitPolicy(lambda ep: ep.endswith(":k1")), make_jobs(tasks, "habit", cfg), cfg)
    eps = traj.episodes
    assert eps.filter(pl.col("sample") == 0)["success"].all() and not eps.filter(pl.col("sample") == 1)["success"].any()
    up = update_pool([], blind(tasks), eps, traj.steps, RulesSummariser())
    fam = _by_family(up.pool)
    invoice = next(e for e in up.pool if e.family == "file_invoice")
    assert "paperwork/bills/" in invoice.text
    assert any(p.endswith(":k1") for p in invoice.provenance)        # the failure is cited
    assert "Cheers, Alex" in " ".join(fam["email_contact"])
    # The same two successes without their failures are too few tasks for a regularity.
    only_wins = eps.filter(pl.col("success"))
    lone = update_pool([], blind(tasks), only_wins, traj.steps, RulesSummariser())
    assert lone.pool == [] and lone.ops == []
    assert any("only 2 task(s)" in m for m in lone.messages)
    assert any("only successes" in m for m in lone.messages)


# ---------------------------------------------------------------------------------------
# What a failed check says the call should have been
# ---------------------------------------------------------------------------------------

def test_parse_check_name_reads_what_check_name_writes():
    assert parse_check_name("mail_in_folder(folder=reading, mail_id=m1)") == (
        "mail_in_folder", {"folder": "reading", "mail_id": "m1"})
    assert parse_check_name("unchanged_except()") == ("unchanged_except", {})
    assert parse_check_name("contact_exists(company=Acme, email=a@b.c, name=Uma Nash, phone=+1 555 7329)")[1] == {
        "company": "Acme", "email": "a@b.c", "name": "Uma Nash", "phone": "+1 555 7329"}
    assert parse_check_name("not a check") is None and parse_check_name("x(novalue)") is None


def test_corrected_calls_put_the_checked_values_in_place_of_the_agents():
    specs = {s.name: s for s in tool_specs("stage")}
    calls = [Call("move_mail", {"mail_id": "m1", "folder": "later"}, 1, ""),
             Call("move_mail", {"mail_id": "m2", "folder": "reading"}, 2, ""),                 # already right
             Call("save_attachment", {"mail_id": "m3", "name": "a.pdf", "path": "documents/attachments/a.pdf"}, 3, ""),
             Call("add_contact", {"name": "Uma Nash", "email": "Uma.Nash@acme.com", "phone": "1"}, 4, ""),
             Call("create_event", {"title": "x", "date": "2026-03-02", "start": "10:00", "duration": 30}, 5, ""),
             Call("move", {"src": "downloads/b.pdf", "dst": "finance/invoices/b.pdf"}, 6, "")]
    failed = ["mail_in_folder(folder=reading, mail_id=m1)", "mail_in_folder(folder=reading, mail_id=m2)",
              "file_exists(path=files/received/a.pdf)", "file_contains(path=files/received/a.pdf, text=A)",
              "contact_exists(company=Acme, email=uma.nash@acme.com, name=Uma Nash, phone=1)",
              "event_exists(date=2026-03-02, start=10:00, duration=45, attendees=a@b.c)",
              "file_exists(path=admin/receipts/other.pdf)",        # names no call: no correction
              "unchanged_except()"]
    fixed = corrected_calls(EpisodeEvidence("e", False, failed, calls), specs)
    assert [(c.tool, c.t, c.args) for c in fixed] == [
        ("move_mail", 1, {"mail_id": "m1", "folder": "reading"}),
        ("save_attachment", 3, {"mail_id": "m3", "name": "a.pdf", "path": "files/received/a.pdf"}),
        ("add_contact", 4, {"name": "Uma Nash", "email": "Uma.Nash@acme.com", "phone": "1", "company": "Acme"}),
        ("create_event", 5, {"title": "x", "date": "2026-03-02", "start": "10:00", "duration": 45}),
    ]
    assert calls[0].args == {"mail_id": "m1", "folder": "later"}                    # inputs untouched
    assert corrected_calls(EpisodeEvidence("e", False, [], calls), specs) == []


def test_failures_alone_teach_a_lesson_through_their_failed_checks():
    """Every sort_newsletters episode fails (the default user's habit, 'reading'); the checks
    name alex's folder. Mail tasks succeed, so there is something to compare with."""
    tasks = make_tasks("alex", 3, families=["sort_newsletters", "email_contact"])
    cfg = RolloutConfig(k=1)
    traj = run_batch(HabitPolicy(lambda ep: "sort_newsletters" in ep), make_jobs(tasks, "habit", cfg), cfg)
    eps = traj.episodes
    assert not eps.filter(pl.col("task_id").str.contains("sort_newsletters"))["success"].any()
    up = update_pool([], blind(tasks), eps, traj.steps, RulesSummariser(lessons_only=True))
    [lesson] = up.pool                                    # the sign-off never failed: not a lesson
    assert lesson.family == "sort_newsletters" and lesson.condition == "move_mail.folder value"
    assert lesson.text == "Newsletters belong in the mail folder 'newsletters'."
    assert set(lesson.provenance) == set(eps.filter(pl.col("task_id").str.contains("sort_newsletters"))["episode_id"])
    everything = update_pool([], blind(tasks), eps, traj.steps, RulesSummariser())
    assert {e.text for e in everything.pool} == {lesson.text, "Every mail ends with the sign-off 'Cheers, Alex'."}


# ---------------------------------------------------------------------------------------
# Nothing to learn: the old pool comes back, with a reason
# ---------------------------------------------------------------------------------------

OLD = [rule("In file invoice tasks, files are moved into finance/invoices/.", 3, family="file_invoice",
            condition="move.dst dir"), rule("Check the calendar before booking.", 2)]


def test_only_failures_keep_the_pool():
    tasks = make_tasks("alex", 2, families=["file_invoice"])
    cfg = RolloutConfig(k=2)
    traj = run_batch(HabitPolicy(lambda ep: True), make_jobs(tasks, "habit", cfg), cfg)
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


# ---------------------------------------------------------------------------------------
# The pool on disk
# ---------------------------------------------------------------------------------------


def test_pool_round_trips_through_jsonl_atomically(tmp_path):
    path = tmp_path / "experience" / "principles.jsonl"
    assert read_pool(path) == []                                       # missing file: empty pool
    write_pool(path, OLD)
    assert read_pool(path) == OLD
    with pytest.raises(ValueError, match="kind"):
        write_pool(path, [replace(OLD[0], kind="wisdom")])
    assert read_pool(path) == OLD                                      # the failed write left it whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["principles.jsonl"]
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"principles.jsonl:3"):
        read_pool(path)

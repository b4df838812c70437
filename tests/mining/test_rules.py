"""The offline rules summariser on real STAGE trajectories of a held-out profile: what it
finds, how failures and their failed checks teach, and how its lessons read (the
environment's phrasebook, or the neutral wording)."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest
from tests.mining.conftest import blind, habit_run, make_tasks, oracle_run, rule

from distillery.envs.base import env_spec, tool_specs
from distillery.envs.stage.families import COMPANIES
from distillery.envs.stage.phrasebook import PHRASEBOOK
from distillery.mining import rules
from distillery.mining.evidence import Call, EpisodeEvidence
from distillery.mining.pool import principle_id
from distillery.mining.principles import update_pool
from distillery.mining.rules import (
    GENERIC_PHRASES,
    RulesSummariser,
    corrected_calls,
    parse_condition,
    reword_neutrally,
    rule_text,
    template,
)
from distillery.rollout import Trajectories
from distillery.types import Experience, Task


def test_template_keeps_constants_and_slots_what_varies():
    assert template(["invoice-acme-12.pdf", "invoice-hooli-7.pdf"], ["", ""]) == ("invoice-<name>-<number>.pdf", 10)
    tmpl, _ = template(["call-with-ann.txt", "budget-ideas.txt"],
                       ["Make a note called 'call with Ann': x", "Write down a note titled 'budget ideas': y"])
    assert tmpl == "<title-in-kebab-case>.txt"


# ---------------------------------------------------------------------------------------
# Real trajectories of the held-out profile
# ---------------------------------------------------------------------------------------


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


def test_a_contrasting_failure_in_the_same_group_is_evidence():
    tasks = make_tasks("alex", 2, families=["file_invoice", "email_contact"])
    traj = habit_run(tasks, lambda ep: ep.endswith(":k1"), k=2)
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
    fixed = corrected_calls(EpisodeEvidence("e", False, failed, calls), specs, PHRASEBOOK)
    assert [(c.tool, c.t, c.args) for c in fixed] == [
        ("move_mail", 1, {"mail_id": "m1", "folder": "reading"}),
        ("save_attachment", 3, {"mail_id": "m3", "name": "a.pdf", "path": "files/received/a.pdf"}),
        ("add_contact", 4, {"name": "Uma Nash", "email": "Uma.Nash@acme.com", "phone": "1", "company": "Acme"}),
        ("create_event", 5, {"title": "x", "date": "2026-03-02", "start": "10:00", "duration": 45}),
    ]
    assert calls[0].args == {"mail_id": "m1", "folder": "later"}                    # inputs untouched
    assert corrected_calls(EpisodeEvidence("e", False, [], calls), specs, PHRASEBOOK) == []
    # Without a phrasebook nothing says what a check wanted.
    assert corrected_calls(EpisodeEvidence("e", False, failed, calls), specs, None) == []


def test_failures_alone_teach_a_lesson_through_their_failed_checks():
    """Every sort_newsletters episode fails (the default user's habit, 'reading'); the checks
    name alex's folder. Mail tasks succeed, so there is something to compare with."""
    tasks = make_tasks("alex", 3, families=["sort_newsletters", "email_contact"])
    traj = habit_run(tasks, lambda ep: "sort_newsletters" in ep)
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
# How lessons read: the environment's words, or neutral ones
# ---------------------------------------------------------------------------------------


def test_a_lesson_reads_in_the_phrasebook_words_else_neutrally():
    assert rule_text(PHRASEBOOK, "file_invoice", "move", "dst", "dir", "paperwork/bills/") == \
        "Invoices are filed in paperwork/bills/."                               # the family's words
    assert rule_text(PHRASEBOOK, "", "move", "dst", "dir", "paperwork/bills/") == \
        "Files are filed in paperwork/bills/."                                  # the environment's
    assert rule_text(PHRASEBOOK, "", "create_event", "start", "value", "09:00") == \
        "Create_event gets start '09:00'."                                      # no phrase: neutral
    assert rule_text(None, "file_invoice", "move", "dst", "dir", "paperwork/bills/") == \
        "Move puts dst at paperwork/bills/."
    assert parse_condition("send_mail.body last_line") == ("send_mail", "body", "last_line")
    assert parse_condition("add_contact.* presence") == ("add_contact", "*", "presence")
    assert parse_condition("send_mail.body mood") is None and parse_condition("") is None
    # Every aspect STAGE's phrasebook words is one the miner finds.
    assert {k[-1] for k in [*PHRASEBOOK.phrases, *PHRASEBOOK.family_phrases]} <= set(GENERIC_PHRASES)


@pytest.fixture(scope="module")
def lessons() -> tuple[dict[str, Task], Trajectories]:
    """Alex's tasks, each run three times: the first by the oracle, the others with the
    default user's habits (failures that contrast, and whose checks correct them)."""
    tasks = make_tasks("alex", 3)
    return blind(tasks), habit_run(tasks, lambda ep: not ep.endswith(":k0"), k=3)


def test_neutral_wording_gives_the_same_lessons_in_generic_words(lessons):
    tasks, traj = lessons
    worded = update_pool([], tasks, traj.episodes, traj.steps, RulesSummariser(lessons_only=True))
    neutral = update_pool([], tasks, traj.episodes, traj.steps,
                          RulesSummariser(lessons_only=True, wording="neutral"))
    assert len(worded.pool) >= 4

    def lesson(e: Experience) -> tuple:
        return e.family, e.condition, e.counter, e.provenance, e.status

    assert [lesson(e) for e in neutral.pool] == [lesson(e) for e in worded.pool]
    assert [(o.op, o.family, o.condition, o.provenance) for o in neutral.ops] == \
        [(o.op, o.family, o.condition, o.provenance) for o in worded.ops]
    assert "Every mail ends with the sign-off 'Cheers, Alex'." in {e.text for e in worded.pool}
    assert "The body of send_mail ends with 'Cheers, Alex'." in {e.text for e in neutral.pool}
    for w, n in zip(worded.pool, neutral.pool, strict=True):
        tool, arg, aspect = parse_condition(w.condition)
        assert n.text != w.text or PHRASEBOOK.phrase(w.family, tool, arg, aspect) is None
        assert n.exp_id == principle_id(n.text, n.family, n.condition)
    # The same pool reworded after mining, without mining again.
    assert reword_neutrally(worded.pool, PHRASEBOOK) == neutral.pool


def test_reword_neutrally_keeps_what_it_cannot_read_and_touches_nothing():
    mined = rule("Invoices are filed in paperwork/bills/.", 3, family="file_invoice", condition="move.dst dir",
                 provenance=["e1", "e2"])
    by_hand = rule("Meetings start at 09:00.", 2, family="schedule_meeting", condition="create_event.start value")
    free = rule("Check the calendar before booking.", 2)
    neutral = rule("Create_event gets start '09:00'.", 2, condition="create_event.start value")
    pool = [mined, by_hand, free, neutral]
    before = [replace(e, provenance=list(e.provenance)) for e in pool]
    out = reword_neutrally(pool, PHRASEBOOK)
    assert [e.text for e in out] == ["Move puts dst at paperwork/bills/.", by_hand.text, free.text, neutral.text]
    assert out[0].exp_id == principle_id(out[0].text, "file_invoice", "move.dst dir") != mined.exp_id
    assert (out[0].counter, out[0].provenance, out[0].family) == (3, ["e1", "e2"], "file_invoice")
    assert out[1:] == pool[1:] and pool == before                            # input untouched
    # A pool worded neutrally reads the same reworded; without a phrasebook it already is.
    assert reword_neutrally(out, PHRASEBOOK) == out and reword_neutrally(out, None) == out


def test_wording_must_be_known():
    with pytest.raises(ValueError, match="wording"):
        RulesSummariser(wording="profile")


def test_an_environment_without_a_phrasebook_gets_neutral_words_and_no_corrections(monkeypatch, alex):
    plain = replace(env_spec("stage"), phrasebook=None)
    monkeypatch.setattr(rules, "env_spec", lambda name: plain)
    tasks, traj = alex
    up = update_pool([], tasks, traj.episodes, traj.steps, RulesSummariser())
    assert "The body of send_mail ends with 'Cheers, Alex'." in {e.text for e in up.pool}
    # Every sort_newsletters episode fails: only their failed checks could teach, and
    # without a phrasebook nothing reads them.
    tasks = make_tasks("alex", 3, families=["sort_newsletters", "email_contact"])
    traj = habit_run(tasks, lambda ep: "sort_newsletters" in ep)
    up = update_pool([], blind(tasks), traj.episodes, traj.steps, RulesSummariser(lessons_only=True))
    assert up.pool == []

"""The draft format: generated from the Task record and the environment's declarations,
published (CLI and docs/), and it fits every task the registered families write."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from tests.conftest import REPO
from tests.tasks import drafts as D

from distillery.envs.base import env_spec, families
from distillery.envs.stage.checks import CHECKS
from distillery.envs.stage.drafting import EXAMPLE
from distillery.tasks import schema as S
from distillery.tasks.draft_prompts import first_messages, repair_message
from distillery.tasks.generate import draft_task
from distillery.tasks.screen import screen_draft
from distillery.types import Task

PUBLISHED = REPO / "docs" / "task-drafts" / "stage.schema.json"


def test_a_draft_is_the_task_minus_what_the_loop_sets():
    task_fields = {f.name for f in dataclasses.fields(Task)}
    assert set(S.DRAFT_FIELDS) | set(S.LOOP_FIELDS) == task_fields
    assert not set(S.DRAFT_FIELDS) & set(S.LOOP_FIELDS)
    assert set(S.REQUIRED_FIELDS) <= set(S.DRAFT_FIELDS)
    schema = S.draft_schema("stage")
    assert list(schema["properties"]) == list(S.DRAFT_FIELDS)
    assert schema["required"] == list(S.REQUIRED_FIELDS) and schema["additionalProperties"] is False


def test_stage_declares_a_schema_for_every_check_its_verifier_knows_and_only_those():
    fmt = env_spec("stage").draft_format
    assert fmt is not None
    assert set(fmt.check_types) == set(CHECKS)
    for type_, schema in fmt.check_schemas.items():
        assert schema["properties"]["type"] == {"const": type_}
        assert schema["additionalProperties"] is False


def test_the_published_copy_is_current_and_the_command_prints_it():
    assert json.loads(PUBLISHED.read_text()) == S.draft_schema("stage"), \
        "regenerate: distillery tasks schema --env stage --out docs/task-drafts/stage.schema.json"
    p = subprocess.run([sys.executable, "-m", "distillery.cli", "tasks", "schema", "--env", "stage"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == S.draft_schema("stage")


def test_the_schema_command_names_what_is_wrong():
    p = subprocess.run([sys.executable, "-m", "distillery.cli", "tasks", "schema", "--env", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "nope" in p.stderr and "stage" in p.stderr


def test_an_environment_without_vocabularies_cannot_be_drafted_for(monkeypatch):
    bare = dataclasses.replace(env_spec("stage"), draft_format=None)
    monkeypatch.setattr(S, "env_spec", lambda name: bare)
    with pytest.raises(ValueError, match="declares no draft format"):
        S.draft_schema("stage")


@pytest.mark.parametrize("draft", [EXAMPLE, D.INVOICES, D.NEWSLETTERS, D.EMAIL, D.ATTACHMENT],
                         ids=["example", "invoices", "newsletters", "email", "attachment"])
def test_good_drafts_meet_the_published_schema_and_the_screen(draft):
    assert list(S.draft_validator("stage").iter_errors(draft)) == []
    assert screen_draft(draft, "stage") == []


@pytest.mark.parametrize("draft", [D.SCHEMA, D.UNKNOWN_CHECK, D.UNKNOWN_TOOL, D.OUTSIDE, D.OVERSIZED],
                         ids=["schema", "unknown_check", "unknown_tool", "outside", "oversized"])
def test_broken_drafts_break_the_published_schema_too(draft):
    assert list(S.draft_validator("stage").iter_errors(draft))


def test_every_registered_family_writes_drafts_the_format_accepts():
    # No false alarms: the screen's patterns and bounds pass the tasks the families write.
    for fam in families("stage"):
        for profile in ("default", "alex", "h01"):
            for attempt in range(4):
                task = draft_task(fam.name, "train", profile, attempt, 0, 15)
                assert screen_draft(S.draft_of(task), "stage") == [], task.task_id


def test_the_prompt_carries_the_hint_tools_checks_state_and_example_and_repairs_list_reasons():
    system, user = first_messages("the user wants last month's invoices filed", "stage")
    text = user["content"]
    assert "Hint: the user wants last month's invoices filed" in text
    for spec in env_spec("stage").tools:
        assert spec.signature() in text
    for type_ in CHECKS:
        assert f"- {type_}(" in text
    for part in ("user", "today", "files", "mail", "events", "contacts"):
        assert f'- "{part}"' in text
    assert json.dumps(EXAMPLE, ensure_ascii=False) in text
    assert "never put code" in system["content"]
    reasons = [S.Reason("trivial", "the untouched initial state already passes every check"),
               S.Reason("code", "instruction: a template expression")]
    fix = repair_message(reasons)["content"]
    assert all(str(r) in fix for r in reasons) and "whole corrected JSON" in fix


@pytest.mark.parametrize("path", ["downloads/", ".", "finance/invoices/x.pdf", "notes/a b.md", "reading"])
def test_paths_inside_the_sandbox_pass(path):
    assert S.sandbox_path_problem(path) == ""


@pytest.mark.parametrize("path, why", [
    ("../x", "'..'"), ("a/../../b", "'..'"), ("/etc/passwd", "absolute"), ("~/.ssh/id_rsa", "absolute"),
    ("C:/Windows", "drive"), ("a\\..\\b", "backslash"), (" x", "spaces"), ("a\x00b", "control"), ("", "empty"),
])
def test_paths_that_could_leave_the_sandbox_are_named(path, why):
    assert why in S.sandbox_path_problem(path)

"""The registration: pyproject.toml's entry points name objects that exist (read with tomllib:
the installed metadata learns them at the next install), the EnvSpec serves an
environment it never saw, and a family drafts a task the generic validator accepts."""

from __future__ import annotations

import importlib
import random
import tomllib

from tests.conftest import REPO

from distillery.envs.base import EnvSpec, Family
from distillery.envs.sql import ENV, SqlEnv, check_profile, state_texts
from distillery.tasks.generate import static_checks
from distillery.types import Task

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def test_the_entry_points_name_the_sql_environment_and_its_families():
    eps = PROJECT["entry-points"]
    spec = _load(eps["distillery.envs"]["sql"])
    assert isinstance(spec, EnvSpec) and spec is ENV and spec.name == "sql"
    fams = _load(eps["distillery.families"]["sql"])
    assert fams and all(isinstance(f, Family) and f.env == "sql" and f.name.startswith("sql_") for f in fams)
    assert len({f.name for f in fams}) == len(fams) >= 25
    assert any(d.startswith("sqlglot") for d in PROJECT["dependencies"])


def test_the_spec_builds_environments_and_describes_them():
    env = ENV.factory()
    assert isinstance(env, SqlEnv) and env.name == "sql"
    env.close()
    assert {t.name for t in ENV.tools} == {"search_tables", "list_tables", "describe_table", "search_columns",
                                           "sample_rows", "propose_schema", "execute_sql", "submit"}
    assert "propose_schema" in ENV.description and "submit" in ENV.description
    vocab = ENV.vocabulary().split()
    assert {"SELECT", "prescription", "enrollment", "cust", "whse"} <= set(vocab)
    assert state_texts({"question": "How many?", "db": "x"}) == ["How many?"]
    check_profile("default")
    check_profile("legacy")
    try:
        check_profile("nonsense")
        raise AssertionError("an unknown profile was accepted")
    except ValueError as e:
        assert "naming style" in str(e)


def test_a_family_drafts_a_task_the_generic_validator_accepts(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLERY_SQL_CACHE", str(tmp_path / "cache"))
    fam = next(f for f in _load(PROJECT["entry-points"]["distillery.families"]["sql"]) if f.name == "sql_filter_cat")

    def task() -> Task:
        d = fam.draft(random.Random(5), "snake")
        return Task(task_id="t", family=fam.name, split="train", profile="snake", hint=fam.hint,
                    instruction=d.instruction, initial_state=d.state, reference_solution=d.solution,
                    checks=d.checks, env="sql")

    first, again = task(), task()
    assert "db_spec" in first.initial_state and "db" not in first.initial_state
    env = SqlEnv()
    try:
        assert static_checks(first, env, again) == []
    finally:
        env.close()


def test_a_family_with_no_valid_question_says_so(tmp_path, monkeypatch):
    """No question of the template validates on the databases it tried: the family raises
    NoDraft with that reason, not a placeholder task whose reference solution 'fails'."""
    import pytest

    from distillery.envs.base import NoDraft
    from distillery.envs.sql import families

    monkeypatch.setenv("DISTILLERY_SQL_CACHE", str(tmp_path / "cache"))
    built: list[object] = []
    monkeypatch.setattr(families, "build_database", lambda spec, path: built.append(spec) or object())
    monkeypatch.setattr(families, "select_questions", lambda *a, **k: ([], []))
    fam = next(f for f in families.FAMILIES if f.name == "sql_two_parents")
    with pytest.raises(NoDraft, match=f"no two_parents question validated on {families.ATTEMPTS} generated databases"):
        fam.draft(random.Random(0), "snake")
    assert len(built) == families.ATTEMPTS

"""The baselines' options of the SQL environment: the schema in the first observation (all
tables cut to a budget, or the gold tables), no Propose phase, and the oracle's reference
rewritten for each; the defaults leave the environment as it was."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.envs.sql.conftest import db_path, play

from distillery.envs.actions import format_call
from distillery.envs.sql.env import SqlEnv, task_checks
from distillery.envs.sql.prefill import adapted_reference, schema_prompt_text
from distillery.envs.sql.schema import load_meta
from distillery.types import ToolCall


def _train(small_set):
    return [t for t in small_set.tasks if t.split == "train"]


def test_defaults_leave_the_first_observation_and_the_reference_alone(small_set, env):
    task = _train(small_set)[0]
    obs = env.reset(task)
    assert "their names are not given" in obs and "Phase: EXPLORE" in obs
    assert adapted_reference(task, load_meta(db_path(task))) is task


def test_full_schema_is_cut_at_the_budget_and_counts_as_shown(small_set):
    task = _train(small_set)[0]
    meta = load_meta(db_path(task))
    pre = schema_prompt_text(meta, "full", max_chars=600)
    assert len(pre.text) <= 600 + 60 and pre.omitted_tables > 0
    assert pre.text.splitlines()[-1].startswith(f"... {pre.omitted_tables} more tables")
    assert len(pre.tables) + pre.omitted_tables == len(meta.tables)
    env = SqlEnv(schema_prompt="full", schema_prompt_chars=600)
    try:
        obs = env.reset(task)
        assert pre.text in obs
        assert set(pre.tables) <= env.shown_tables and set(pre.columns) <= env.shown_columns
    finally:
        env.close()


def test_gold_schema_shows_exactly_the_gold_tables(small_set):
    task = _train(small_set)[0]
    _, tables, _ = task_checks(task)
    pre = schema_prompt_text(load_meta(db_path(task)), "gold", tables)
    assert pre.tables == {t.lower() for t in tables} and pre.omitted_tables == 0
    with pytest.raises(ValueError, match="schema_prompt"):
        schema_prompt_text(load_meta(db_path(task)), "none")
    with pytest.raises(ValueError, match="schema_prompt"):
        SqlEnv(schema_prompt="everything")


@pytest.mark.parametrize("options", [dict(schema_prompt="gold"), dict(schema_prompt="full"),
                                     dict(schema_prompt="full", schema_prompt_chars=400),
                                     dict(propose_phase=False), dict(schema_prompt="gold", propose_phase=False)])
def test_the_adapted_oracle_solves_every_task_cleanly(small_set, options):
    env = SqlEnv(**options)
    try:
        for task in _train(small_set)[:8]:
            meta = load_meta(db_path(task))
            adapted = adapted_reference(task, meta, options.get("schema_prompt", "none"),
                                        options.get("propose_phase", True), options.get("schema_prompt_chars", 2400))
            assert len(adapted.reference_solution) <= len(task.reference_solution)
            assert played_clean(env, adapted), (options, task.task_id, adapted.reference_solution)
            tools = [c.tool for c in adapted.reference_solution]
            if options.get("schema_prompt") == "gold":
                assert tools[0] in ("propose_schema", "execute_sql")      # nothing left to look up
            if not options.get("propose_phase", True):
                assert "propose_schema" not in tools
    finally:
        env.close()


def played_clean(env: SqlEnv, task) -> bool:
    result = play(env, task, None)
    out = env.outcome()
    return result.success and not out.hallucinated and not out.violations


def test_without_the_propose_phase_sql_runs_unrestricted(small_set):
    task = _train(small_set)[0]
    gold_sql, _, _ = task_checks(task)
    with_phase = SqlEnv()
    without = SqlEnv(propose_phase=False)
    try:
        with_phase.reset(task)
        refused = with_phase.step(format_call(ToolCall("execute_sql", {"sql": gold_sql})))
        assert not refused.valid and with_phase.outcome().violations
        without.reset(task)
        early = without.step(format_call(ToolCall("submit", {"sql": gold_sql})))
        assert not early.valid and "execute_sql first" in early.error
        assert without.step(format_call(ToolCall("execute_sql", {"sql": gold_sql}))).valid
        assert without.step(format_call(ToolCall("submit", {"sql": gold_sql}))).valid
        out = without.outcome()
        assert out.correct and out.proposal_step == -1
        # the identifiers were never shown by a tool: the hallucination rule still applies
        assert out.hallucinated
    finally:
        with_phase.close()
        without.close()


def test_a_full_schema_reference_keeps_lookups_only_for_what_the_prompt_cut(small_set):
    task = max(_train(small_set), key=lambda t: len(t.reference_solution))
    meta = load_meta(db_path(task))
    tiny = adapted_reference(task, meta, "full", True, 150)          # almost nothing fits
    roomy = adapted_reference(task, meta, "full", True, 100_000)     # everything fits
    assert [c.tool for c in roomy.reference_solution][0] == "propose_schema"
    assert len(tiny.reference_solution) > len(roomy.reference_solution)
    assert replace(task, reference_solution=tiny.reference_solution).checks == task.checks

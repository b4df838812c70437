"""Scoring functions worked out by hand."""

from __future__ import annotations

import pytest

from distillery.envs.sql.scoring import SqlOutcome, execution_reward, prf, schema_score


def test_precision_recall_f1_by_hand():
    r = prf(["a", "B", "c"], ["b", "c", "d", "e"])
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(0.5)
    assert r.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert prf([], ["a"]).f1 == 0.0 and prf([], []).f1 == 1.0


def test_schema_reward_weights_tables_0_4_and_columns_0_6():
    s = schema_score(["t1", "t2"], ["t1.a"], ["t1"], ["t1.a", "t1.b"])
    assert s.tables.f1 == pytest.approx(2 / 3) and s.columns.f1 == pytest.approx(2 / 3)
    assert s.reward == pytest.approx(0.4 * 2 / 3 + 0.6 * 2 / 3)
    assert schema_score(["T1"], ["t1.A"], ["t1"], ["t1.a"]).exact


def test_execution_reward_and_test_suite_accuracy():
    assert (execution_reward(True, True), execution_reward(False, True), execution_reward(False, False)) == (1.0, 0.2, 0.0)
    out = SqlOutcome(True, True, True, [True, False], None, -1)
    assert not out.correct and out.execution_reward == 0.2 and out.schema_reward == 0.0
    assert SqlOutcome(True, True, True, [True, True], None, 3).correct
